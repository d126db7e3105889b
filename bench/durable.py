"""Durable writes: the store's append and record write against the bare system calls.

Each store operation is timed against the least any durable write of the same bytes
must do, in the same process and directory, alternating the two so that both see the
same disk: an append is open(O_APPEND) + write + fsync; a record write is a temp file
written and fsynced, renamed into place, and the directory fsynced.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from stores import ThreadStore, files, new_message, new_thread

ROUNDS = 300


def _bare_append(dir_fd: int, line: bytes) -> None:
    fd = os.open("bare.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _bare_record(dir_fd: int, body: bytes) -> None:
    fd = os.open("bare.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename("bare.tmp", "bare.json", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def _alternate(
    store_op: Callable[[int], None], bare_op: Callable[[int], None]
) -> tuple[float, float]:
    """Median seconds of each, measured in alternation."""
    store_times: list[float] = []
    bare_times: list[float] = []
    for i in range(ROUNDS):
        for op, times in ((store_op, store_times), (bare_op, bare_times))[:: 1 if i % 2 else -1]:
            started = time.perf_counter()
            op(i)
            times.append(time.perf_counter() - started)
    return statistics.median(store_times), statistics.median(bare_times)


def measure(root: Path) -> dict[str, tuple[float, float]]:
    """Median seconds of (store, bare) for one durable write of the same bytes:
    "append" and "record" are the store's durable-write primitives (stores.files:
    append_line, write_record); "append_message" and "update_metadata" are the whole
    store operations around them (the thread's lock, the busy check, the journal)."""
    store = ThreadStore(root / "threads")
    thread = store.create_thread(new_thread({"ticket": "4411", "customer": "maria@example.com"}))
    dir_fd = os.open(store.thread_dir(thread.id), os.O_RDONLY | os.O_DIRECTORY)
    try:
        text = "The replacement arrived, thanks. One more question about the invoice total."
        messages = [new_message(thread.id, "user", f"{text} ({i})") for i in range(2 * ROUNDS)]
        lines = [files.encode_json(m.to_dict()) + b"\n" for m in messages]
        pairs = [{"ticket": str(4411 + i), "customer": "maria@example.com"} for i in range(ROUNDS)]
        records = [{**thread.to_dict(), "metadata": pair} for pair in pairs]
        bodies = [files.encode_json(record) + b"\n" for record in records]
        return {
            "append": _alternate(
                lambda i: files.append_line(dir_fd, "log.jsonl", messages[i].to_dict()),
                lambda i: _bare_append(dir_fd, lines[i]),
            ),
            "record": _alternate(
                lambda i: files.write_record(dir_fd, "record.json", records[i], exclusive=False),
                lambda i: _bare_record(dir_fd, bodies[i]),
            ),
            "append_message": _alternate(
                lambda i: store.append_message(thread.id, messages[ROUNDS + i]),
                lambda i: _bare_append(dir_fd, lines[ROUNDS + i]),
            ),
            "update_metadata": _alternate(
                lambda i: store.update_thread_metadata(thread.id, pairs[i]),
                lambda i: _bare_record(dir_fd, bodies[i]),
            ),
        }
    finally:
        os.close(dir_fd)
