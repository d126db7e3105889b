"""Benchmark stores, built fast through ThreadStore.import_threads.

Threads get realistic metadata and a few messages of ordinary length; the big store is
built by two processes side by side (import_threads indexes each batch under the store
lock and syncs once at its end), so 100,000 threads take seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from stores import (
    Run,
    RunStatus,
    Thread,
    ThreadMessage,
    ThreadStore,
    new_id,
    new_message,
    new_run,
    text_content,
)

BATCH = 10_000  # threads per import_threads call (one sync each)
START = 1_700_000_000  # created_at of the oldest benchmark thread

_SENTENCE = (
    "the order arrived late and the invoice shows a different total than the quote we "
    "agreed please check the shipping address and confirm when the replacement ships "
    "thanks for the quick reply our team will look into the account settings today"
)
_WORDS = _SENTENCE.split()


def _text(n: int, words: int) -> str:
    return " ".join(_WORDS[(n * 7 + i) % len(_WORDS)] for i in range(words))


_TEXTS = [_text(n, 24 + n % 17) for n in range(64)]


class _Ids:
    """Fresh time-ordered IDs in new_id's shape, without a syscall each: one random
    prefix per process, then a counter."""

    def __init__(self) -> None:
        self._prefix = new_id("x")[2:18]
        self._count = 0

    def __call__(self, kind: str) -> str:
        self._count += 1
        return f"{kind}_{self._prefix}{self._count:016x}"


def _message(ids: _Ids, thread_id: str, n: int, created_at: int) -> ThreadMessage:
    return ThreadMessage(
        id=ids("msg"),
        thread_id=thread_id,
        role="user" if n % 2 == 0 else "assistant",
        content=text_content(_TEXTS[n % len(_TEXTS)]),
        created_at=created_at,
    )


def _threads(first: int, count: int) -> Iterator[tuple[Thread, Sequence[ThreadMessage]]]:
    ids = _Ids()
    for n in range(first, first + count):
        created = START + n * 60
        thread = Thread(
            id=ids("thread"),
            created_at=created,
            metadata={
                "ticket": str(100_000 + n),
                "customer": f"customer{n % 5000}@example.com",
                "channel": ("email", "chat", "phone")[n % 3],
            },
        )
        messages = [_message(ids, thread.id, n + i, created + i) for i in range(1 + n % 4)]
        yield thread, messages


def _import_range(root: str, first: int, count: int) -> int:
    store = ThreadStore(root)
    done = 0
    while done < count:
        size = min(BATCH, count - done)
        done += store.import_threads(_threads(first + done, size))
    return done


def add_threads(root: Path, count: int, *, processes: int = 2) -> float:
    """Import `count` threads into the store at `root`; returns the seconds it took."""
    started = time.perf_counter()
    if count < 2 * BATCH or processes < 2:
        _import_range(str(root), 0, count)
    else:
        half = count // processes
        ranges = [
            (i * half, half if i < processes - 1 else count - i * half) for i in range(processes)
        ]
        with ProcessPoolExecutor(processes) as pool:
            total = sum(
                pool.map(_import_range, [str(root)] * processes, *zip(*ranges, strict=True))
            )
        assert total == count, (total, count)
    return time.perf_counter() - started


def add_long_thread(root: Path, messages: int) -> str:
    """One thread with `messages` messages; returns its ID."""
    store = ThreadStore(root)
    thread = Thread(id=new_id("thread"), created_at=int(time.time()), metadata={"kind": "long"})
    ids = _Ids()
    log = [_message(ids, thread.id, i, thread.created_at) for i in range(messages)]
    store.import_threads([(thread, log)])
    return thread.id


def add_finished_runs(root: Path, count: int) -> None:
    """Completed runs on the newest `count` threads, so their list rows show a status."""
    store = ThreadStore(root)
    for thread in store.list_threads(limit=count).items:
        run = replace(new_run(thread.id), status=RunStatus.COMPLETED)
        store.create_run(thread.id, run)


def add_polled_run(root: Path) -> tuple[str, str]:
    """A thread whose run is in progress, as a worker leaves it mid-reply: claimed under
    a long lease, one open step, a growing draft. Returns (thread ID, run ID)."""
    store = ThreadStore(root)
    thread = Thread(id=new_id("thread"), created_at=int(time.time()), metadata={"kind": "polled"})
    store.import_threads([(thread, [new_message(thread.id, "user", _text(3, 40))])])
    run: Run = store.create_run(thread.id, new_run(thread.id, instructions="Answer briefly."))
    ref = next(ref for ref in store.queued_runs() if ref.run_id == run.id)
    claimed = store.claim_run(ref, worker_id="bench-worker", lease_seconds=3600, run_timeout=3600)
    assert claimed is not None
    from stores import new_step  # noqa: PLC0415 - only this helper needs it

    reply_id = new_id("msg")
    store.append_step(thread.id, run.id, new_step(thread.id, run.id, message_id=reply_id))
    store.write_draft(thread.id, run.id, "Echo: " + _text(3, 30), message_id=reply_id)
    return thread.id, run.id
