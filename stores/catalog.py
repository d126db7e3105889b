"""A store-wide view for the overview and the thread filters, kept cheap to refresh.

Every thread creation, metadata change and run status change is also appended, as one
JSON line, to a journal in the store's own directory. Each process keeps a Catalog that
replays the journal once and then reads only what was appended since (a stat tells
whether anything was), so counts, filters and lookups cost work proportional to what
changed, not to the size of the store, and stay correct across processes.

The journal is derived data: `ThreadStore.rebuild_journal()` rewrites it from the
records. It is appended without fsync; after a power loss it may miss the last events,
which `store check` notices and a rebuild repairs.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ids import is_safe_id
from .records import RunStatus

JOURNAL = "journal.jsonl"


@dataclass(slots=True)
class RunSummary:
    run_id: str
    thread_id: str
    status: RunStatus
    model: str
    created_at: int
    updated_at: float
    ended_at: float | None = None


@dataclass(slots=True)
class ThreadSummary:
    thread_id: str
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)
    latest_run: RunSummary | None = None


Pair = tuple[str, str]
_NO_PAIRS: tuple[Pair, ...] = ()


class _Threads(Mapping[str, ThreadSummary]):
    """The catalog's threads, as ThreadSummary objects made on demand: the catalog
    keeps, per thread, only a (created_at, metadata pairs) tuple, whose pairs are the
    metadata index's own keys. A store of 100,000 threads then holds a few dozen bytes
    per thread besides its ID, and nothing the garbage collector has to walk."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __getitem__(self, thread_id: str) -> ThreadSummary:
        created_at, pairs = self._catalog._threads[thread_id]
        latest = self._catalog._latest.get(thread_id)
        return ThreadSummary(thread_id, created_at, dict(pairs), latest)

    def __contains__(self, thread_id: object) -> bool:
        return thread_id in self._catalog._threads

    def __iter__(self) -> Iterator[str]:
        return iter(self._catalog._threads)

    def __len__(self) -> int:
        return len(self._catalog._threads)


@dataclass(frozen=True)
class HourBucket:
    """Runs that ended in one hour, by outcome."""

    start: int  # Unix time of the hour's start
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def journal_line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def thread_event(thread_id: str, created_at: int, metadata: dict[str, str]) -> dict[str, Any]:
    return {"e": "thread", "id": thread_id, "created_at": created_at, "metadata": metadata}


def run_event(
    run_id: str, thread_id: str, status: str, model: str, created_at: int, at: float
) -> dict[str, Any]:
    return {
        "e": "run",
        "id": run_id,
        "thread_id": thread_id,
        "status": status,
        "model": model,
        "created_at": created_at,
        "at": at,
    }


def append_events(path: Path, events: Iterable[dict[str, Any]]) -> None:
    """Append events with one write (O_APPEND keeps concurrent appenders' lines whole)."""
    data = b"".join(journal_line(event) for event in events)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class Catalog:
    """An in-memory projection of the journal; call refresh() before reading."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        """Forget everything replayed. The lock stays: a refresh that replaced it while
        holding it would let the next refresh in beside it, both replaying at once, the
        offset overshooting the journal's size, and every refresh after that replaying
        the journal from the start again."""
        self._offset = 0
        self._identity: tuple[int, int] | None = None
        self.runs: dict[str, RunSummary] = {}
        # thread ID -> (created_at, metadata pairs); the latest run of threads that have one.
        self._threads: dict[str, tuple[int, tuple[Pair, ...]]] = {}
        self._latest: dict[str, RunSummary] = {}
        self.threads: Mapping[str, ThreadSummary] = _Threads(self)
        self._runs_by_status: dict[str, set[str]] = {status.value: set() for status in RunStatus}
        self._ended_by_hour: Counter[tuple[int, str]] = Counter()
        # (key, value) -> the one thread ID that has it, or a set of them: most pairs
        # (ticket numbers, e-mail addresses) belong to one thread, and a set costs ten
        # times a reference.
        self._metadata_index: dict[Pair, str | set[str]] = {}
        self._shared: dict[Pair, Pair] = {}  # one tuple for each pair that threads share
        self._latest_status_index: dict[str, set[str]] = {}

    # ----------------------------------------------------------------- refresh

    def refresh(self) -> None:
        with self._lock:
            try:
                st = os.stat(self.journal)
            except FileNotFoundError:
                self._reset()
                return
            identity = (st.st_dev, st.st_ino)
            if identity != self._identity or st.st_size < self._offset:
                self._reset()  # rebuilt (a new file) or truncated: replay from the start
                self._identity = identity
            if st.st_size == self._offset:
                return
            with open(self.journal, "rb") as handle:
                handle.seek(self._offset)
                # Line by line (buffered), so that replaying a big journal never holds
                # all of it in memory at once.
                for line in handle:
                    if not line.endswith(b"\n"):
                        break  # a line still being written waits for next time
                    self._offset += len(line)
                    if line != b"\n":
                        self._apply(line)

    def _reset(self) -> None:
        self._clear()

    def _apply(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind = event["e"]
            if kind == "run":
                self._apply_run(event)
            elif kind == "thread":
                self._apply_thread(event)
            elif kind == "thread_deleted":
                self._forget_thread(event["id"])
        except (ValueError, KeyError, TypeError):
            return  # a damaged line costs only itself

    def _apply_thread(self, event: dict[str, Any]) -> None:
        thread_id = event["id"]
        if not is_safe_id(thread_id):
            return
        known = self._threads.get(thread_id)
        if known is None:
            created_at, old_pairs = int(event["created_at"]), _NO_PAIRS
        else:
            created_at, old_pairs = known
        for pair in old_pairs:
            self._index_discard(pair, thread_id)
        pairs = tuple(
            self._index_add((sys.intern(str(k)), str(v)), thread_id)
            for k, v in dict(event.get("metadata") or {}).items()
        )
        self._threads[thread_id] = (created_at, pairs or _NO_PAIRS)

    def _index_add(self, pair: Pair, thread_id: str) -> Pair:
        """Index `thread_id` under `pair`; returns the index's own copy of the pair, so
        that every thread with it shares one tuple."""
        index = self._metadata_index
        found = index.get(pair)
        if found is None:
            index[pair] = thread_id
            return pair
        if isinstance(found, str):
            if found == thread_id:
                return pair
            index[pair] = {found, thread_id}
        else:
            found.add(thread_id)
        return self._shared.setdefault(pair, pair)

    def _index_discard(self, pair: Pair, thread_id: str) -> None:
        index = self._metadata_index
        found = index.get(pair)
        if found is None:
            return
        if isinstance(found, str):
            if found == thread_id:
                del index[pair]
            return
        found.discard(thread_id)
        if len(found) == 1:
            index[pair] = next(iter(found))
            self._shared.pop(pair, None)

    def _apply_run(self, event: dict[str, Any]) -> None:
        status = RunStatus(event["status"])
        at = float(event["at"])
        run = self.runs.get(event["id"])
        if run is None:
            run = RunSummary(
                run_id=event["id"],
                thread_id=event["thread_id"],
                status=status,
                model=str(event.get("model", "")),
                created_at=int(event["created_at"]),
                updated_at=at,
            )
            self.runs[run.run_id] = run
        else:
            self._runs_by_status[run.status.value].discard(run.run_id)
            if run.ended_at is not None:
                self._ended_by_hour[(_hour(run.ended_at), run.status.value)] -= 1
            run.status = status
            run.updated_at = at
        self._runs_by_status[status.value].add(run.run_id)
        run.ended_at = at if status.is_terminal else None
        if run.ended_at is not None:
            self._ended_by_hour[(_hour(run.ended_at), status.value)] += 1
        if run.thread_id not in self._threads:
            self._threads[run.thread_id] = (run.created_at, _NO_PAIRS)
        latest = self._latest.get(run.thread_id)
        if latest is None or (run.created_at, run.run_id) >= (latest.created_at, latest.run_id):
            if latest is not None:
                self._latest_status_index.get(latest.status.value, set()).discard(run.thread_id)
            self._latest[run.thread_id] = run
            self._latest_status_index.setdefault(status.value, set()).add(run.thread_id)

    def _forget_thread(self, thread_id: str) -> None:
        known = self._threads.pop(thread_id, None)
        if known is None:
            return
        for pair in known[1]:
            self._index_discard(pair, thread_id)
        latest = self._latest.pop(thread_id, None)
        if latest is not None:
            self._latest_status_index.get(latest.status.value, set()).discard(thread_id)
        for run_id in [r.run_id for r in self.runs.values() if r.thread_id == thread_id]:
            run = self.runs.pop(run_id)
            self._runs_by_status[run.status.value].discard(run_id)
            if run.ended_at is not None:
                self._ended_by_hour[(_hour(run.ended_at), run.status.value)] -= 1

    # ------------------------------------------------------------------ queries

    def run_counts(self) -> dict[str, int]:
        """How many runs are in each status (every status listed, zeros included)."""
        return {status: len(ids) for status, ids in self._runs_by_status.items()}

    def runs_in(self, statuses: Iterable[str], *, limit: int = 50) -> list[RunSummary]:
        """The most recently changed runs in any of `statuses`."""
        found = [self.runs[i] for status in statuses for i in self._runs_by_status.get(status, ())]
        found.sort(key=lambda run: run.updated_at, reverse=True)
        return found[:limit]

    def threads_with_metadata(self, key: str, value: str) -> list[str]:
        """IDs of threads whose metadata has key=value, newest first."""
        found = self._metadata_index.get((key, value), ())
        return self._newest_first((found,) if isinstance(found, str) else found)

    def threads_with_latest_status(self, status: str) -> list[str]:
        """IDs of threads whose latest run has `status`, newest first."""
        return self._newest_first(self._latest_status_index.get(status, set()))

    def _newest_first(self, ids: Iterable[str]) -> list[str]:
        threads = self._threads

        def key(thread_id: str) -> tuple[int, str]:
            known = threads.get(thread_id)
            return (known[0] if known else 0, thread_id)

        return sorted(ids, key=key, reverse=True)

    def ended_per_hour(self, *, hours: int = 24, now: float | None = None) -> list[HourBucket]:
        """Runs that ended in each of the last `hours` hours, oldest hour first."""
        current = _hour(time.time() if now is None else now)
        starts = [current - (hours - 1 - i) * 3600 for i in range(hours)]
        return [
            HourBucket(
                start,
                {
                    status.value: count
                    for status in RunStatus
                    if status.is_terminal
                    and (count := self._ended_by_hour[(start, status.value)]) > 0
                },
            )
            for start in starts
        ]


def _hour(timestamp: float) -> int:
    return int(timestamp // 3600 * 3600)
