"""ThreadStore: the reference contract over plain files, made safe for many processes.

Layout under the root (the reference's, plus dot-names that can never be thread IDs):

    <root>/<thread_id>/meta.json                    thread record      (whole-file replace)
    <root>/<thread_id>/messages.jsonl               message log        (append only)
    <root>/<thread_id>/runs/<run_id>/status.json    run record
    <root>/<thread_id>/runs/<run_id>/steps/<step_id>.json
    <root>/<thread_id>/.lock                        serialises writers to this thread
    <root>/<thread_id>/.active_run                  hint: the thread's non-terminal run
    <root>/.threadsite/threads.idx                  thread IDs in creation order (derived)
    <root>/.threadsite/store.lock                   serialises thread creation

Every read-modify-write happens under the thread's flock, which all processes respect;
reads take no lock, since every record is published whole.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from . import files
from .catalog import JOURNAL, Catalog, append_events, journal_line, run_event, thread_event
from .errors import (
    AlreadyExists,
    LeaseLost,
    MessageNotFound,
    RunInTerminalState,
    RunNotFound,
    RunStepNotFound,
    StoreError,
    StoreIOError,
    ThreadBusy,
    ThreadNotFound,
)
from .files import BadRecord, Missing
from .ids import is_safe_id
from .integrity import TEMP_FILE_GRACE_SECONDS, IntegrityReport, check_store, repair_store
from .records import (
    INCOMPLETE_REASONS,
    STATUS_TIMESTAMP_FIELD,
    Draft,
    FilesVersion,
    Lease,
    Run,
    RunError,
    RunRef,
    RunStatus,
    RunStep,
    RunStepStatus,
    RunUsage,
    RunView,
    Thread,
    ThreadMessage,
    WorkerHeartbeat,
    now,
)

T = TypeVar("T")
log = logging.getLogger("threadsite.store")

STORE_DIR = ".threadsite"
THREAD_INDEX = "threads.idx"
STORE_LOCK = "store.lock"
THREAD_LOCK = ".lock"
ACTIVE_RUN = ".active_run"
META = "meta.json"
MESSAGES = "messages.jsonl"
RUNS = "runs"
STATUS = "status.json"
STEPS = "steps"
LEASE = "lease.json"
DRAFT = "draft.json"
QUEUE_DIR = "queue"
RUNNING_DIR = "running"
WORKERS_DIR = "workers"

TRASH_PREFIX = ".trash-"
OFFSET_CACHE_SIZE = 4096  # remembered log offsets of recent page cursors
WORKER_ALIVE_SECONDS = 10.0  # a heartbeat older than this belongs to a dead worker
# A file or directory changed less than this long ago is not vouched for by run_version
# or messages_version: a second change within the filesystem's timestamp granularity
# could leave its stat as it was. (Kernel timestamps lag the clock by a tick,
# milliseconds; this is ample.)
STAT_SETTLED_SECONDS = 1.0
ORPHAN_SCAN_LIMIT = 1000  # log lines read back when ending a run that did not complete

WORKER_LOST = RunError(
    code="server_error",
    message="The worker running this run stopped answering (its lease ran out), so the run "
    "was ended. Start it again if it is still needed.",
)


class InvalidCursor(StoreError):
    def __init__(self, cursor: str) -> None:
        super().__init__(f"Invalid page cursor {cursor!r}.")


class CorruptRecord(StoreIOError):
    """A record file exists but does not parse: damage, not absence."""

    def __init__(self, path: str) -> None:
        StoreError.__init__(self, f"The record {path} is damaged and cannot be read.")
        self.action = "reading " + path
        self.errno = None


R2 = TypeVar("R2")


@dataclass(frozen=True)
class LogPaging(Generic[R2]):
    """How to page one append-only log: what its lines hold and which to keep."""

    scope: str  # distinguishes cursors of different logs in the offset cache
    parse: Callable[[bytes], R2 | None]
    id_of: Callable[[bytes], str | None]
    keep: Callable[[R2], bool]
    not_found: Callable[[str], StoreError]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; pass `next_cursor` back to get the following page."""

    items: list[T]
    next_cursor: str | None


class ThreadStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self._root_path = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / STORE_DIR).mkdir(exist_ok=True)
        except OSError as error:
            raise StoreIOError(f"opening the store at {self.root}", error) from error
        self._catalog = Catalog(self.root / STORE_DIR / JOURNAL)
        # Whether run_version may vouch for a run from `stat`s (see there).
        self.stats_are_current = files.filesystem_type(self.root) in files.LOCAL_FILESYSTEMS
        # (scope, ID) -> offset of its line in a log, so API paging resumes in place.
        self._offsets: dict[tuple[str, str], int] = {}
        self._offsets_lock = threading.Lock()

    # ------------------------------------------------------------------ journal

    def _journal(self, *events: dict[str, Any]) -> None:
        """Record changes for the catalog. The records are already safe on disk, so a
        failure here is logged, not raised: the journal is rebuilt from the records."""
        try:
            append_events(self.root / STORE_DIR / JOURNAL, events)
        except OSError as error:
            log.warning("could not append to the store journal (%s); run store_check", error)

    def _journal_run(self, run: Run) -> None:
        at = time.time()
        self._journal(run_event(run.id, run.thread_id, run.status, run.model, run.created_at, at))

    def catalog(self) -> Catalog:
        """The store-wide view (counts, filters, metadata lookups), brought up to date."""
        if not (self.root / STORE_DIR / JOURNAL).exists():
            self.rebuild_journal()
        self._catalog.refresh()
        return self._catalog

    def rebuild_journal(self) -> int:
        """Rewrite the catalog's journal from the records; returns the events written."""
        lines = []
        with self._io("rebuilding the store journal"):
            for thread_id in self.list_thread_ids():
                try:
                    thread = self.get_thread(thread_id)
                    runs = self.list_runs(thread_id)
                except StoreError:
                    continue
                lines.append(
                    journal_line(thread_event(thread_id, thread.created_at, thread.metadata))
                )
                for run in reversed(runs):
                    at = float(run.ended_at or run.started_at or run.created_at)
                    lines.append(
                        journal_line(
                            run_event(run.id, thread_id, run.status, run.model, run.created_at, at)
                        )
                    )
            with self._store_dir() as store_fd:
                files.write_bytes(store_fd, JOURNAL, b"".join(lines))
        return len(lines)

    # ----------------------------------------------------------------- plumbing

    @contextmanager
    def _io(self, action: str) -> Iterator[None]:
        """Turn OS failures into StoreIOError; store errors pass through."""
        try:
            yield
        except StoreError:
            raise
        except BadRecord as error:
            raise CorruptRecord(f"{action}: {error}") from None
        except Missing:
            # A record vanished between two steps of a read: only damage does that.
            raise StoreIOError(action, OSError(2, "a record vanished while being read")) from None
        except OSError as error:
            raise StoreIOError(action, error) from error

    @contextmanager
    def _root_fd(self) -> Iterator[int]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _thread(self, thread_id: str) -> Iterator[int]:
        """The thread's directory fd; ThreadNotFound unless it holds a meta.json.
        (Every read and write starts here, so it opens what it needs directly, without
        the nested helpers: two system calls and two context managers fewer.)"""
        if not is_safe_id(thread_id):
            raise ThreadNotFound(thread_id)
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = files.open_dir(root_fd, (thread_id,))
        except Missing:
            raise ThreadNotFound(thread_id) from None
        finally:
            os.close(root_fd)
        try:
            if not files.is_regular_file(fd, META):
                raise ThreadNotFound(thread_id)
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _run_dir(self, thread_fd: int, run_id: str) -> Iterator[int]:
        if not is_safe_id(run_id):
            raise RunNotFound(run_id)
        try:
            fd = files.open_dir(thread_fd, (RUNS, run_id))
        except Missing:
            raise RunNotFound(run_id) from None
        try:
            if not files.is_regular_file(fd, STATUS):
                raise RunNotFound(run_id)
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _locked_thread(self, action: str, thread_id: str) -> Iterator[int]:
        """The thread's directory fd, held under its write lock."""
        with (
            self._io(action),
            self._thread(thread_id) as fd,
            files.exclusive_lock(fd, THREAD_LOCK),
        ):
            yield fd

    @contextmanager
    def _locked_run(self, action: str, thread_id: str, run_id: str) -> Iterator[tuple[int, int]]:
        """(thread fd, run fd), under the thread's write lock."""
        with self._locked_thread(action, thread_id) as fd, self._run_dir(fd, run_id) as run_fd:
            yield fd, run_fd

    @contextmanager
    def _reading_run(self, action: str, thread_id: str, run_id: str) -> Iterator[int]:
        with self._io(action), self._thread(thread_id) as fd, self._run_dir(fd, run_id) as run_fd:
            yield run_fd

    def _read_run(self, run_fd: int) -> Run:
        return _load(Run, run_fd, STATUS)

    def _write_run(self, run_fd: int, run: Run) -> None:
        files.write_record(run_fd, STATUS, run.to_dict(), exclusive=False)
        self._journal_run(run)
        if run.status.is_terminal:
            # The work-queue markers and the worker's files are hints about live runs:
            # the run has ended whether or not they can be removed now.
            with suppress(OSError):
                files.remove(run_fd, LEASE)
                files.remove(run_fd, DRAFT)
                self._unmark(QUEUE_DIR, run)
                self._unmark(RUNNING_DIR, run)

    # ------------------------------------------------------------------ threads

    def thread_dir(self, thread_id: str) -> Path:
        if not is_safe_id(thread_id):
            raise ThreadNotFound(thread_id)
        return self.root / thread_id

    def create_thread(self, thread: Thread, messages: Sequence[ThreadMessage] = ()) -> Thread:
        """Create a thread, with its first `messages` if any: it appears whole or not at
        all (the log is written before meta.json, which makes the thread exist)."""
        if not is_safe_id(thread.id):
            raise StoreError(f"Refusing to create a thread with the unsafe ID {thread.id!r}.")
        for message in messages:
            self._check_message(message, thread.id)
        with (
            self._io(f"creating thread {thread.id}"),
            self._root_fd() as root_fd,
            files.opened_dir(root_fd, (STORE_DIR,), create=True) as store_fd,
            files.exclusive_lock(store_fd, STORE_LOCK),
        ):
            try:
                thread_fd = files.open_dir(root_fd, (thread.id,), create=True)
            except Missing:  # the name is taken by a file or symlink
                raise AlreadyExists(thread.id) from None
            try:
                if files.is_regular_file(thread_fd, META):
                    raise AlreadyExists(thread.id)
                if messages:
                    log_body = b"".join(
                        files.encode_json(message.to_dict()) + b"\n" for message in messages
                    )
                    files.write_bytes(thread_fd, MESSAGES, log_body)
                # Indexed before it exists: an entry for a thread whose creation then
                # failed is skipped by listings, while a thread never indexed would be
                # missing from them.
                files.append_line(store_fd, THREAD_INDEX, {"id": thread.id})
                try:
                    files.write_record(thread_fd, META, thread.to_dict(), exclusive=True)
                except FileExistsError:
                    raise AlreadyExists(thread.id) from None
            finally:
                os.close(thread_fd)
        self._journal(thread_event(thread.id, thread.created_at, thread.metadata))
        return thread

    def import_threads(self, items: Iterable[tuple[Thread, Sequence[ThreadMessage]]]) -> int:
        """Create many threads with their messages at once (imports, benchmark stores).

        Each thread appears whole (its meta.json, written last, is renamed into place) and
        none is replaced (AlreadyExists), but the fsyncs are batched into one sync at the
        end, and the store lock is taken only to index the batch, so several importers
        can run side by side. Nothing is acknowledged until the sync returns."""
        index_lines: list[bytes] = []
        events: list[dict[str, Any]] = []
        with self._io("importing threads"), self._root_fd() as root_fd:
            self._ensure_index(root_fd)
            for thread, messages in items:
                if not is_safe_id(thread.id):
                    raise StoreError(f"Refusing to import the unsafe thread ID {thread.id!r}.")
                for message in messages:
                    self._check_owner(message.thread_id, thread.id, "message")
                try:
                    os.mkdir(thread.id, 0o755, dir_fd=root_fd)
                except FileExistsError:
                    raise AlreadyExists(thread.id) from None
                with files.opened_dir(root_fd, (thread.id,)) as thread_fd:
                    if messages:
                        log_body = b"".join(
                            files.encode_json(message.to_dict()) + b"\n" for message in messages
                        )
                        files.append_bytes(thread_fd, MESSAGES, log_body)
                    meta = files.encode_json(thread.to_dict()) + b"\n"
                    files.write_bytes(thread_fd, META, meta, durable=False)
                index_lines.append(files.encode_json({"id": thread.id}) + b"\n")
                events.append(thread_event(thread.id, thread.created_at, thread.metadata))
            with (
                files.opened_dir(root_fd, (STORE_DIR,), create=True) as store_fd,
                files.exclusive_lock(store_fd, STORE_LOCK),
            ):
                files.append_bytes(store_fd, THREAD_INDEX, b"".join(index_lines))
            self._journal(*events)
            os.sync()
        return len(index_lines)

    def get_thread(self, thread_id: str) -> Thread:
        with self._io(f"reading thread {thread_id}"), self._thread(thread_id) as fd:
            try:
                return _load(Thread, fd, META)
            except Missing:
                raise ThreadNotFound(thread_id) from None

    def list_thread_ids(self) -> list[str]:
        with self._io("listing threads"), self._root_fd() as root_fd:
            ids = []
            with os.scandir(root_fd) as entries:
                for entry in entries:
                    if not (is_safe_id(entry.name) and entry.is_dir(follow_symlinks=False)):
                        continue
                    with files.opened_dir(root_fd, (entry.name,)) as fd:
                        if files.is_regular_file(fd, META):
                            ids.append(entry.name)
            return sorted(ids)

    def delete_thread(self, thread_id: str) -> None:
        """Remove a thread with its messages and runs. The directory is first renamed to a
        hidden name in one atomic step, so readers see the whole thread or none of it;
        the removal of the files follows (store repair finishes it after a crash)."""
        with (
            self._locked_thread(f"deleting thread {thread_id}", thread_id),
            self._root_fd() as root_fd,
        ):
            hidden = f"{TRASH_PREFIX}{thread_id}-{os.urandom(4).hex()}"
            os.rename(thread_id, hidden, src_dir_fd=root_fd, dst_dir_fd=root_fd)
            os.fsync(root_fd)
            self._journal({"e": "thread_deleted", "id": thread_id})
        shutil.rmtree(self.root / hidden, ignore_errors=True)

    def update_thread_metadata(self, thread_id: str, metadata: dict[str, str]) -> Thread:
        with self._locked_thread(f"updating thread {thread_id}", thread_id) as fd:
            thread = _load(Thread, fd, META)
            thread = replace(thread, metadata=dict(metadata))
            files.write_record(fd, META, thread.to_dict(), exclusive=False)
            # Inside the lock, so the journal's order of updates is the records' order.
            self._journal(thread_event(thread.id, thread.created_at, thread.metadata))
        return thread

    def list_threads(self, *, limit: int = 50, cursor: str | None = None) -> Page[Thread]:
        """Threads newest first. Reads the creation-order index backwards from the cursor,
        so a page costs work proportional to the page, whatever the store's size."""
        end = _parse_cursor(cursor)
        threads: list[Thread] = []
        next_cursor: str | None = None
        seen: set[str] = set()
        with self._io("listing threads"), self._root_fd() as root_fd:
            self._ensure_index(root_fd)
            with files.opened_dir(root_fd, (STORE_DIR,), create=True) as store_fd:
                for offset, line in files.lines_backward(store_fd, THREAD_INDEX, end):
                    if len(threads) == limit:
                        next_cursor = str(offset + len(line) + 1)
                        break
                    thread_id = _index_entry(line)
                    if thread_id is None or thread_id in seen:
                        continue
                    seen.add(thread_id)
                    try:
                        threads.append(self.get_thread(thread_id))
                    except ThreadNotFound:
                        continue  # deleted, or its creation never finished
        return Page(threads, next_cursor)

    def _ensure_index(self, root_fd: int) -> None:
        with files.opened_dir(root_fd, (STORE_DIR,), create=True) as store_fd:
            if files.is_regular_file(store_fd, THREAD_INDEX):
                return
        self.rebuild_index()

    def rebuild_index(self) -> int:
        """Rewrite the thread index from the thread directories (oldest first); returns
        how many threads it lists. Needed only for a store written by another program."""
        with (
            self._io("rebuilding the thread index"),
            self._root_fd() as root_fd,
            files.opened_dir(root_fd, (STORE_DIR,), create=True) as store_fd,
            files.exclusive_lock(store_fd, STORE_LOCK),
        ):
            keyed = []
            for thread_id in self.list_thread_ids():
                try:
                    keyed.append((self.get_thread(thread_id).created_at, thread_id))
                except StoreError:
                    keyed.append((0, thread_id))
            keyed.sort()
            body = b"".join(files.encode_json({"id": thread_id}) + b"\n" for _, thread_id in keyed)
            files.write_bytes(store_fd, THREAD_INDEX, body)
            return len(keyed)

    # ----------------------------------------------------------------- messages

    def append_message(self, thread_id: str, msg: ThreadMessage) -> ThreadMessage:
        self._check_message(msg, thread_id)
        line = files.encode_json(msg.to_dict()) + b"\n"  # before the lock: less time held
        with self._locked_thread(f"appending to thread {thread_id}", thread_id) as fd:
            if msg.role == "user":
                active = self._active_run(fd)
                if active is not None:
                    raise ThreadBusy(thread_id, active.id)
            files.append_encoded_line(fd, MESSAGES, line)
        return msg

    def list_messages(self, thread_id: str) -> list[ThreadMessage]:
        with self._io(f"reading messages of {thread_id}"), self._thread(thread_id) as fd:
            try:
                data = files.read_bytes(fd, MESSAGES)
            except Missing:
                return []
        return [msg for line in data.split(b"\n") if (msg := _parse_message(line))]

    def latest_messages(self, thread_id: str, *, limit: int = 50) -> Page[ThreadMessage]:
        """The newest `limit` messages, oldest first; next_cursor pages to older ones."""
        return self.messages_before(thread_id, None, limit=limit)

    def messages_before(
        self, thread_id: str, cursor: str | None, *, limit: int = 50
    ) -> Page[ThreadMessage]:
        end = _parse_cursor(cursor)
        found: list[ThreadMessage] = []
        next_cursor = None
        with self._io(f"reading messages of {thread_id}"), self._thread(thread_id) as fd:
            for offset, line in files.lines_backward(fd, MESSAGES, end):
                message = _parse_message(line)
                if message is None:
                    continue
                if len(found) == limit:
                    next_cursor = str(offset + len(line) + 1)
                    break
                found.append(message)
        found.reverse()
        return Page(found, next_cursor)

    def last_message(self, thread_id: str) -> ThreadMessage | None:
        page = self.latest_messages(thread_id, limit=1)
        return page.items[0] if page.items else None

    def get_message(self, thread_id: str, message_id: str) -> ThreadMessage:
        with self._io(f"reading messages of {thread_id}"), self._thread(thread_id) as fd:
            message = _parse_message(self._message_line(fd, thread_id, message_id)[1])
        assert message is not None  # _message_line returns only lines that parse
        return message

    def list_messages_page(
        self,
        thread_id: str,
        *,
        limit: int = 20,
        order: str = "desc",
        after: str | None = None,
        before: str | None = None,
        run_id: str | None = None,
    ) -> tuple[list[ThreadMessage], bool]:
        """A page in the Assistants API's terms: `order` "asc" (oldest first) or "desc";
        `after` / `before` name the message the page follows or precedes in that order.
        Returns the messages and whether more follow."""
        with self._io(f"reading messages of {thread_id}"), self._thread(thread_id) as fd:
            return self._page_log(
                fd,
                MESSAGES,
                LogPaging(
                    scope=thread_id,
                    parse=_parse_message,
                    id_of=_message_id,
                    keep=lambda m: run_id is None or m.run_id == run_id,
                    not_found=MessageNotFound,
                ),
                limit=limit,
                order=order,
                after=after,
                before=before,
            )

    def list_threads_page(
        self,
        *,
        limit: int = 20,
        order: str = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> tuple[list[Thread], bool]:
        """Threads a page at a time in the Assistants API's terms (see list_messages_page),
        in creation order, read from the thread index around the cursor."""

        def load(line: bytes) -> Thread | None:
            thread_id = _index_entry(line)
            if thread_id is None:
                return None
            try:
                return self.get_thread(thread_id)
            except ThreadNotFound:
                return None  # deleted

        with self._io("listing threads"), self._root_fd() as root_fd:
            self._ensure_index(root_fd)
            with files.opened_dir(root_fd, (STORE_DIR,)) as store_fd:
                return self._page_log(
                    store_fd,
                    THREAD_INDEX,
                    LogPaging(
                        scope="",
                        parse=load,
                        id_of=_index_entry,
                        keep=lambda thread: True,
                        not_found=ThreadNotFound,
                    ),
                    limit=limit,
                    order=order,
                    after=after,
                    before=before,
                )

    def _page_log(
        self,
        dir_fd: int,
        name: str,
        paging: LogPaging[R2],
        *,
        limit: int,
        order: str,
        after: str | None,
        before: str | None,
    ) -> tuple[list[R2], bool]:
        """One page of an append-only log whose file order is oldest first. Reading
        starts at the cursor's line (found through a small cache of recent cursors), so
        walking a long log page by page reads each line about once."""
        if order not in {"asc", "desc"}:
            raise StoreError(f"order must be 'asc' or 'desc', not {order!r}.")
        cursor = after or before
        forward = (order == "asc") == (before is None)  # forward: towards newer lines
        if cursor is None:
            start = 0 if forward else None
        else:
            offset, line = self._find_line(dir_fd, name, paging, cursor)
            start = offset + len(line) + 1 if forward else offset
        lines = (
            files.lines_forward(dir_fd, name, start or 0)
            if forward
            else files.lines_backward(dir_fd, name, start)
        )
        found: list[R2] = []
        has_more = False
        for offset, line in lines:
            item = paging.parse(line)
            if item is None or not paging.keep(item):
                continue
            if len(found) == limit:
                has_more = True
                break
            found.append(item)
            item_id = paging.id_of(line)
            if item_id is not None:
                self._remember_offset(paging.scope, item_id, offset)
        # Read away from a `before` cursor, the page comes out nearest-first: turn it round.
        return (found[::-1] if before is not None else found), has_more

    def _remember_offset(self, scope: str, item_id: str, offset: int) -> None:
        with self._offsets_lock:
            cache = self._offsets
            cache[(scope, item_id)] = offset
            if len(cache) > OFFSET_CACHE_SIZE:
                del cache[next(iter(cache))]

    def _find_line(
        self, dir_fd: int, name: str, paging: LogPaging[Any], item_id: str
    ) -> tuple[int, bytes]:
        """(offset, line) of an item in a log: a cached offset if the line there still
        holds it (a rewrite moves lines), else a search from the newest end."""
        if not is_safe_id(item_id):
            raise paging.not_found(item_id)
        with self._offsets_lock:
            cached = self._offsets.get((paging.scope, item_id))
        if cached is not None:
            for offset, line in files.lines_forward(dir_fd, name, cached):
                if paging.id_of(line) == item_id:
                    return offset, line
                break
        for offset, line in files.lines_backward(dir_fd, name):
            if paging.id_of(line) == item_id:
                self._remember_offset(paging.scope, item_id, offset)
                return offset, line
        raise paging.not_found(item_id)

    def _message_line(self, thread_fd: int, thread_id: str, message_id: str) -> tuple[int, bytes]:
        paging = LogPaging(
            scope=thread_id,
            parse=_parse_message,
            id_of=_message_id,
            keep=lambda m: True,
            not_found=MessageNotFound,
        )
        return self._find_line(thread_fd, MESSAGES, paging, message_id)

    def update_message_metadata(
        self, thread_id: str, message_id: str, metadata: dict[str, str]
    ) -> ThreadMessage:
        """Replace a message's metadata (the log is rewritten whole, atomically)."""
        with self._locked_thread(f"updating message {message_id}", thread_id) as fd:
            return self._rewrite_message(fd, thread_id, message_id, metadata=dict(metadata))

    def delete_message(self, thread_id: str, message_id: str) -> ThreadMessage:
        with self._locked_thread(f"deleting message {message_id}", thread_id) as fd:
            return self._rewrite_message(fd, thread_id, message_id, delete=True)

    def _rewrite_message(
        self,
        thread_fd: int,
        thread_id: str,
        message_id: str,
        *,
        metadata: dict[str, str] | None = None,
        delete: bool = False,
    ) -> ThreadMessage:
        offset, line = self._message_line(thread_fd, thread_id, message_id)
        message = _parse_message(line)
        assert message is not None
        data = files.read_bytes(thread_fd, MESSAGES)
        if delete:
            replacement = b""
        else:
            message = replace(message, metadata=metadata or {})
            replacement = files.encode_json(message.to_dict()) + b"\n"
        body = data[:offset] + replacement + data[offset + len(line) + 1 :]
        files.write_bytes(thread_fd, MESSAGES, body)
        return message

    # --------------------------------------------------------------------- runs

    def create_run(self, thread_id: str, run: Run, messages: Sequence[ThreadMessage] = ()) -> Run:
        """Create a run; `messages` are appended to the thread first, in the same atomic
        step, so they land only if the run is created (a busy thread refuses both)."""
        self._check_owner(run.thread_id, thread_id, "run")
        if not is_safe_id(run.id):
            raise StoreError(f"Refusing to create a run with the unsafe ID {run.id!r}.")
        for message in messages:
            self._check_message(message, thread_id)
        with self._locked_thread(f"creating run {run.id}", thread_id) as fd:
            if not run.status.is_terminal:
                active = self._active_run(fd)
                if active is not None:
                    raise ThreadBusy(thread_id, active.id)
            offsets = [files.append_line(fd, MESSAGES, message.to_dict()) for message in messages]
            try:
                self._create_run_locked(fd, run)
            except BaseException:
                if offsets:  # take the messages back: the run they came with was not made
                    with suppress(OSError):
                        files.truncate(fd, MESSAGES, offsets[0])
                raise
            self._journal_run(run)
        return run

    def _create_run_locked(self, fd: int, run: Run) -> None:
        if not run.status.is_terminal:
            # The hint goes down first: a crash after it leaves a hint naming a run that
            # does not exist, which readers treat as no active run.
            files.write_record(fd, ACTIVE_RUN, {"run_id": run.id}, exclusive=False)
        with files.opened_dir(fd, (RUNS,), create=True) as runs_fd:
            try:
                os.mkdir(run.id, 0o755, dir_fd=runs_fd)
            except FileExistsError:
                raise AlreadyExists(run.id) from None
            os.fsync(runs_fd)
            if run.status is RunStatus.QUEUED:
                # The marker before the record: a crash between them leaves a marker
                # naming a missing run, which a worker drops.
                self._mark(QUEUE_DIR, run)
            with files.opened_dir(runs_fd, (run.id,)) as run_fd:
                files.write_record(run_fd, STATUS, run.to_dict(), exclusive=True)

    def get_run(self, thread_id: str, run_id: str) -> Run:
        with self._reading_run(f"reading run {run_id}", thread_id, run_id) as run_fd:
            return self._read_run(run_fd)

    def list_runs(self, thread_id: str) -> list[Run]:
        """The thread's runs, newest first."""
        with self._io(f"listing runs of {thread_id}"), self._thread(thread_id) as fd:
            try:
                runs_fd = files.open_dir(fd, (RUNS,))
            except Missing:
                return []
            runs = []
            try:
                with os.scandir(runs_fd) as entries:
                    names = [e.name for e in entries if is_safe_id(e.name)]
                for name in names:
                    try:
                        with files.opened_dir(runs_fd, (name,)) as run_fd:
                            runs.append(self._read_run(run_fd))
                    except (Missing, BadRecord):
                        continue  # half-created or damaged; store check reports it
            finally:
                os.close(runs_fd)
        runs.sort(key=lambda run: (run.created_at, run.id), reverse=True)
        return runs

    def latest_run(self, thread_id: str) -> Run | None:
        runs = self.list_runs(thread_id)
        return runs[0] if runs else None

    def active_run(self, thread_id: str) -> Run | None:
        with self._io(f"reading thread {thread_id}"), self._thread(thread_id) as fd:
            return self._active_run(fd)

    def _active_run(self, thread_fd: int) -> Run | None:
        """The thread's run that has not ended, if any: the one the hint names, or, for
        a thread whose runs another program wrote (no hint), found by looking at each."""
        try:
            hint = files.read_json(thread_fd, ACTIVE_RUN)
        except Missing:
            return self._scan_for_active_run(thread_fd)
        except BadRecord:
            return None
        run_id = hint.get("run_id")
        if not is_safe_id(run_id):
            return None
        try:
            with files.opened_dir(thread_fd, (RUNS, run_id)) as run_fd:
                run = self._read_run(run_fd)
        except Missing:
            return None
        return None if run.status.is_terminal else run

    def _scan_for_active_run(self, thread_fd: int) -> Run | None:
        try:
            runs_fd = files.open_dir(thread_fd, (RUNS,))
        except Missing:
            return None
        try:
            for name in files.list_names(runs_fd):
                if not is_safe_id(name):
                    continue
                try:
                    with files.opened_dir(runs_fd, (name,)) as run_fd:
                        run = self._read_run(run_fd)
                except (Missing, BadRecord):
                    continue
                if not run.status.is_terminal:
                    return run
        finally:
            os.close(runs_fd)
        return None

    def update_run_metadata(self, thread_id: str, run_id: str, metadata: dict[str, str]) -> Run:
        with self._locked_run(f"updating run {run_id}", thread_id, run_id) as (_, run_fd):
            run = replace(self._read_run(run_fd), metadata=dict(metadata))
            files.write_record(run_fd, STATUS, run.to_dict(), exclusive=False)
            return run

    def update_run_status(
        self, thread_id: str, run_id: str, status: RunStatus | str, error: RunError | None = None
    ) -> Run:
        return self._set_run_status(thread_id, run_id, RunStatus(status), error, force=False)

    def force_update_run_status(
        self, thread_id: str, run_id: str, status: RunStatus | str, error: RunError | None = None
    ) -> Run:
        """Operator repair: like update_run_status, but may leave a terminal state."""
        return self._set_run_status(thread_id, run_id, RunStatus(status), error, force=True)

    def _set_run_status(
        self, thread_id: str, run_id: str, status: RunStatus, error: RunError | None, *, force: bool
    ) -> Run:
        with self._locked_run(f"updating run {run_id}", thread_id, run_id) as (_, run_fd):
            run = self._read_run(run_fd)
            if run.status.is_terminal and not force:
                raise RunInTerminalState(run)
            run = _with_status(run, status, error)
            if status is RunStatus.QUEUED:
                self._mark(QUEUE_DIR, run)  # queued again: a worker must see it
            self._write_run(run_fd, run)
            return run

    def cancel_run(self, thread_id: str, run_id: str) -> Run:
        """Cancel per the contract, in one atomic step. A queued run is cancelled at once;
        a running one becomes `cancelling` for the worker that holds it to stop, or is
        cancelled at once when no live worker holds it. A run that already ended raises
        RunInTerminalState carrying its final state."""
        with self._locked_run(f"cancelling run {run_id}", thread_id, run_id) as (fd, run_fd):
            run = self._read_run(run_fd)
            if run.status.is_terminal:
                raise RunInTerminalState(run)
            if run.status is RunStatus.QUEUED or not self._lease_is_live(run_fd):
                return self._finish_locked(fd, run_fd, run, RunStatus.CANCELLED)
            if run.status is not RunStatus.CANCELLING:
                run = _with_status(run, RunStatus.CANCELLING, None)
                self._write_run(run_fd, run)
            return run

    def complete_run(
        self,
        thread_id: str,
        run_id: str,
        message: ThreadMessage | None,
        usage: RunUsage | None = None,
        *,
        worker_id: str | None = None,
    ) -> Run:
        """Finish a run that produced `message`, in one atomic step with any cancel: the
        message is appended, the open steps complete (the message_creation step naming
        the message) and the run completes. A run being cancelled ends `cancelled`
        instead, without the message; a run that already ended raises RunInTerminalState.
        With `worker_id`, the call is refused (LeaseLost) unless that worker still holds
        the run's lease: a worker that lost its run must not finish it.
        """
        if message is not None:
            self._check_owner(message.thread_id, thread_id, "message")
        with self._locked_run(f"completing run {run_id}", thread_id, run_id) as (fd, run_fd):
            run = self._read_run(run_fd)
            if run.status.is_terminal:
                raise RunInTerminalState(run)
            self._check_lease(run_fd, run, worker_id)
            if run.status is RunStatus.CANCELLING:
                return self._finish_locked(fd, run_fd, run, RunStatus.CANCELLED)
            return self._finish_locked(
                fd, run_fd, run, RunStatus.COMPLETED, message=message, usage=usage
            )

    def finish_run(
        self,
        thread_id: str,
        run_id: str,
        status: RunStatus | str,
        error: RunError | None = None,
        *,
        partial: ThreadMessage | None = None,
        worker_id: str | None = None,
    ) -> Run:
        """End a run in a terminal `status`, closing its open steps the same way (a
        cancelled run's steps are cancelled, a failed run's fail). A run being cancelled
        ends `cancelled` whatever is asked. `partial`, an `incomplete` message, keeps
        the text produced before the end. RunInTerminalState if it already ended."""
        status = RunStatus(status)
        if not status.is_terminal or status is RunStatus.COMPLETED:
            raise StoreError(f"finish_run ends runs that did not complete, not {status.value!r}.")
        if partial is not None:
            self._check_owner(partial.thread_id, thread_id, "message")
            partial = replace(partial, status="incomplete")
        with self._locked_run(f"ending run {run_id}", thread_id, run_id) as (fd, run_fd):
            run = self._read_run(run_fd)
            if run.status.is_terminal:
                raise RunInTerminalState(run)
            self._check_lease(run_fd, run, worker_id)
            if run.status is RunStatus.CANCELLING:
                status, error = RunStatus.CANCELLED, None
            if partial is not None:
                partial = replace(partial, incomplete_reason=INCOMPLETE_REASONS[status.value])
            return self._finish_locked(fd, run_fd, run, status, error, message=partial)

    def _finish_locked(
        self,
        thread_fd: int,
        run_fd: int,
        run: Run,
        status: RunStatus,
        error: RunError | None = None,
        *,
        message: ThreadMessage | None = None,
        usage: RunUsage | None = None,
    ) -> Run:
        """End `run` (the thread lock held): append its message, close its open steps to
        match, then write the run's terminal status, which is the commit point. If any
        write fails before it, what was written is undone, so a run that did not end
        never shows its reply (and a cancel that follows cannot leave one behind)."""
        if status is not RunStatus.COMPLETED and self._demote_orphan_replies(
            thread_fd, run, INCOMPLETE_REASONS.get(status.value, "run_failed")
        ):
            message = None  # the orphan already holds the text, now marked incomplete
        message_offset = None
        if message is not None:
            message_offset = files.append_line(thread_fd, MESSAGES, message.to_dict())
        replaced_steps: list[RunStep] = []
        step_status = _STEP_STATUS_FOR_RUN.get(status, RunStepStatus.FAILED)
        try:
            for step in self._read_steps(run_fd):
                if step.status.is_terminal:
                    continue
                replaced_steps.append(step)
                step = _with_step_status(step, step_status)
                if step_status is RunStepStatus.FAILED:
                    step.last_error = error
                if step.type == "message_creation":
                    _name_message(step, message.id if message is not None else None)
                self._write_step(run_fd, step)
            ended = _with_status(run, status, error)
            if usage is not None:
                ended.usage = usage
            self._write_run(run_fd, ended)
        except BaseException:
            self._undo_finish(thread_fd, run_fd, status, message_offset, replaced_steps)
            raise
        return ended

    def _demote_orphan_replies(self, thread_fd: int, run: Run, reason: str) -> bool:
        """Mark `incomplete` any completed reply of `run` left by a writer that died
        between appending it and completing the run, so a run that did not complete
        never shows a completed reply. Such replies sit at the log's tail (the thread
        is busy while its run is active), so only the lines since the run began are read;
        the log is rewritten whole, atomically, only when one is found."""
        tail: list[tuple[int, bytes]] = []
        for offset, line in files.lines_backward(thread_fd, MESSAGES):
            reply = _parse_message(line)
            if reply is not None and reply.created_at < run.created_at:
                break
            tail.append((offset, line))
            if len(tail) > ORPHAN_SCAN_LIMIT:
                break
        orphans = {
            offset
            for offset, line in tail
            if (reply := _parse_message(line)) is not None
            and reply.run_id == run.id
            and reply.role == "assistant"
            and reply.status == "completed"
        }
        if not orphans:
            return False
        data = files.read_bytes(thread_fd, MESSAGES)
        start = min(orphans)
        rewritten = [data[:start]]
        for offset, line in sorted(tail):
            if offset < start:
                continue
            if offset in orphans:
                reply = _parse_message(line)
                assert reply is not None
                demoted = replace(reply, status="incomplete", incomplete_reason=reason)
                line = files.encode_json(demoted.to_dict())
            rewritten.append(line + b"\n")
        files.write_bytes(thread_fd, MESSAGES, b"".join(rewritten))
        return True

    def _undo_finish(
        self,
        thread_fd: int,
        run_fd: int,
        status: RunStatus,
        message_offset: int | None,
        replaced_steps: list[RunStep],
    ) -> None:
        """Best effort, on a failing disk: take back a half-done _finish_locked unless its
        commit point (the run's new status) already reached the file."""
        with suppress(Missing, BadRecord, OSError):
            if self._read_run(run_fd).status is status:
                return
        with suppress(OSError):
            if message_offset is not None:
                files.truncate(thread_fd, MESSAGES, message_offset)
        for step in replaced_steps:
            with suppress(OSError):
                self._write_step(run_fd, step)

    def _check_lease(self, run_fd: int, run: Run, worker_id: str | None) -> None:
        if worker_id is None:
            return
        lease = self._read_lease(run_fd)
        if run.status is RunStatus.QUEUED or lease is None or lease.worker_id != worker_id:
            raise LeaseLost(run.id, worker_id)

    def _lease_is_live(self, run_fd: int) -> bool:
        lease = self._read_lease(run_fd)
        return lease is not None and lease.expires_at > time.time()

    def _read_lease(self, run_fd: int) -> Lease | None:
        try:
            return Lease.from_dict(files.read_json(run_fd, LEASE))
        except (Missing, BadRecord, KeyError, TypeError, ValueError):
            return None

    # --------------------------------------------------------------- work queue
    #
    # The store is the queue. A queued run has an empty marker file named
    # "<run_id>.<thread_id>" in .threadsite/queue/ (a "." never appears in an ID, so the
    # name splits unambiguously, and names sort by run ID, that is by creation time).
    # A claimed run's marker moves to .threadsite/running/, and the worker holding it
    # keeps a lease.json in the run's directory. Markers are hints: every decision
    # re-reads the run's status under the thread lock, so a stale marker only costs a
    # look. Workers therefore touch only the runs that wait or run, never the whole store.

    def queued_runs(self) -> list[RunRef]:
        """Runs waiting for a worker, oldest first."""
        return self._refs(QUEUE_DIR)

    def running_runs(self) -> list[RunRef]:
        """Runs some worker has claimed, oldest first."""
        return self._refs(RUNNING_DIR)

    def queued_count(self) -> int:
        return len(self.queued_runs())

    def _refs(self, directory: str) -> list[RunRef]:
        with self._io("reading the work queue"), self._store_dir(directory) as dir_fd:
            refs = [ref for name in files.list_names(dir_fd) if (ref := _ref_from_entry(name))]
        return sorted(refs)

    @contextmanager
    def _store_dir(self, *names: str) -> Iterator[int]:
        with (
            self._root_fd() as root_fd,
            files.opened_dir(root_fd, (STORE_DIR, *names), create=True) as fd,
        ):
            yield fd

    def _mark(self, directory: str, run: Run) -> None:
        with self._store_dir(directory) as dir_fd:
            files.touch(dir_fd, _entry_name(run.id, run.thread_id))

    def _unmark(self, directory: str, run: Run) -> None:
        with self._store_dir(directory) as dir_fd:
            files.remove(dir_fd, _entry_name(run.id, run.thread_id))

    def claim_run(
        self, ref: RunRef, *, worker_id: str, lease_seconds: float, run_timeout: float
    ) -> Run | None:
        """Atomically take a queued run for `worker_id`: it becomes in_progress under a
        lease. None when the run is no longer waiting (taken, cancelled, gone) or has
        waited past `run_timeout` (it is then expired)."""
        try:
            with self._locked_run(f"claiming run {ref.run_id}", *_ids(ref)) as (fd, run_fd):
                run = self._read_run(run_fd)
                if run.status is not RunStatus.QUEUED:
                    self._unmark(QUEUE_DIR, run)  # a stale marker
                    return None
                if run.created_at + run_timeout <= time.time():
                    self._finish_locked(fd, run_fd, run, RunStatus.EXPIRED)
                    return None
                lease = Lease(worker_id=worker_id, expires_at=time.time() + lease_seconds)
                files.write_record(run_fd, LEASE, lease.to_dict(), exclusive=False)
                self._mark(RUNNING_DIR, run)
                run = _with_status(run, RunStatus.IN_PROGRESS, None)
                self._write_run(run_fd, run)
                self._unmark(QUEUE_DIR, run)
                return run
        except (ThreadNotFound, RunNotFound):
            # The run's creation never finished (or it was deleted): drop the marker.
            with self._io("reading the work queue"), self._store_dir(QUEUE_DIR) as dir_fd:
                files.remove(dir_fd, _entry_name(ref.run_id, ref.thread_id))
            return None

    def renew_lease(self, ref: RunRef, *, worker_id: str, lease_seconds: float) -> bool:
        """Extend `worker_id`'s lease; False when it no longer holds the run (the run
        ended, or its lease lapsed and the run was taken from it)."""
        with self._locked_run(f"renewing a lease on {ref.run_id}", *_ids(ref)) as (_, run_fd):
            lease = self._read_lease(run_fd)
            run = self._read_run(run_fd)
            if lease is None or lease.worker_id != worker_id or run.status.is_terminal:
                return False
            lease = Lease(worker_id=worker_id, expires_at=time.time() + lease_seconds)
            files.write_record(run_fd, LEASE, lease.to_dict(), exclusive=False)
            return True

    def reap_run(self, ref: RunRef, *, run_timeout: float) -> Run | None:
        """End a claimed run nobody can finish: its worker's lease lapsed (the run fails,
        or is cancelled if a cancel was asked) or it outlived `run_timeout` (expired).
        Returns the ended run, or None if it is fine or already ended."""
        try:
            with self._locked_run(f"checking run {ref.run_id}", *_ids(ref)) as (fd, run_fd):
                run = self._read_run(run_fd)
                if run.status.is_terminal:
                    self._unmark(RUNNING_DIR, run)
                    return None
                if run.status is RunStatus.QUEUED:
                    self._mark(QUEUE_DIR, run)  # handed back: it waits again
                    self._unmark(RUNNING_DIR, run)
                    return None
                if run.created_at + run_timeout <= time.time():
                    return self._finish_locked(fd, run_fd, run, RunStatus.EXPIRED)
                if self._lease_is_live(run_fd):
                    return None
                if run.status is RunStatus.CANCELLING:
                    return self._finish_locked(fd, run_fd, run, RunStatus.CANCELLED)
                return self._finish_locked(fd, run_fd, run, RunStatus.FAILED, WORKER_LOST)
        except (ThreadNotFound, RunNotFound):
            with self._io("reading the work queue"), self._store_dir(RUNNING_DIR) as dir_fd:
                files.remove(dir_fd, _entry_name(ref.run_id, ref.thread_id))
            return None

    def release_run(self, ref: RunRef, *, worker_id: str, reason: str) -> Run | None:
        """Hand a run back to the queue (a worker shutting down): its open steps fail
        with `reason` and it waits for another worker. A run being cancelled is
        cancelled instead. None if `worker_id` no longer holds it."""
        with self._locked_run(f"releasing run {ref.run_id}", *_ids(ref)) as (fd, run_fd):
            run = self._read_run(run_fd)
            lease = self._read_lease(run_fd)
            if run.status.is_terminal or lease is None or lease.worker_id != worker_id:
                return None
            if run.status is RunStatus.CANCELLING:
                return self._finish_locked(fd, run_fd, run, RunStatus.CANCELLED)
            error = RunError(code="server_error", message=reason)
            for step in self._read_steps(run_fd):
                if not step.status.is_terminal:
                    step = _with_step_status(step, RunStepStatus.FAILED)
                    step.last_error = error
                    if step.type == "message_creation":
                        _name_message(step, None)  # the reply was never written
                    self._write_step(run_fd, step)
            files.remove(run_fd, LEASE)
            files.remove(run_fd, DRAFT)
            self._mark(QUEUE_DIR, run)
            run = replace(run, status=RunStatus.QUEUED, started_at=None)
            self._write_run(run_fd, run)
            self._unmark(RUNNING_DIR, run)
            return run

    def write_draft(
        self,
        thread_id: str,
        run_id: str,
        text: str,
        *,
        message_id: str | None = None,
        worker_id: str | None = None,
    ) -> None:
        """Publish the text a run has produced so far, for readers to watch it grow.
        With `worker_id`, only while that worker holds the run (else LeaseLost)."""
        body = files.encode_json({"text": text, "message_id": message_id})
        with self._reading_run(f"writing the draft of {run_id}", thread_id, run_id) as run_fd:
            if worker_id is not None:
                lease = self._read_lease(run_fd)
                if lease is None or lease.worker_id != worker_id:
                    raise LeaseLost(run_id, worker_id)
            files.write_bytes(run_fd, DRAFT, body, durable=False)

    def draft(self, thread_id: str, run_id: str) -> Draft | None:
        """What a running run has produced so far, or None."""
        with self._reading_run(f"reading the draft of {run_id}", thread_id, run_id) as run_fd:
            return self._read_draft(run_fd)

    def _read_draft(self, run_fd: int) -> Draft | None:
        """The run's draft, or None when it has none or it does not parse."""
        try:
            data = files.read_json(run_fd, DRAFT)
        except (Missing, BadRecord):
            return None
        text, message_id = data.get("text"), data.get("message_id")
        if not isinstance(text, str):
            return None
        return Draft(text, message_id if is_safe_id(message_id) else None)

    def run_view(self, thread_id: str, run_id: str) -> RunView:
        """The run, its steps and its draft, for a page that polls a live run: one walk
        to the run's directory instead of one per get_run, list_steps and draft.

        The order matters: the run record is read first, then the steps, then the
        draft. Ending a run closes its open steps before it writes the run's terminal
        status (the commit point), and an ended run gains no step, so when the record
        read here says the run has ended, the steps read after it are final too. (Read
        the other way round, a run that ended between the two reads could show as ended
        with a step still open.) The draft is read only while the run is neither queued
        (a queued run has none) nor terminal (ending a run removes it); otherwise None.

        Raises ThreadNotFound or RunNotFound like get_run, for unknown or unsafe IDs.
        """
        version = self.run_version(thread_id, run_id)
        with self._reading_run(f"reading run {run_id}", thread_id, run_id) as run_fd:
            run = self._read_run(run_fd)
            steps = self._read_steps(run_fd)
            live = not run.status.is_terminal and run.status is not RunStatus.QUEUED
            draft = self._read_draft(run_fd) if live else None
        return RunView(run=run, steps=steps, draft=draft, version=version)

    def run_version(self, thread_id: str, run_id: str) -> FilesVersion | None:
        """A value that changes whenever what run_view shows may have: three `stat`s
        instead of a read, for a page that polls a run that seldom changes.

        Every write to a run's record, steps, draft or lease publishes a file by rename
        (or link) into the run's directory or its steps directory, which changes that
        directory's change time, and the record's own inode and times change with it.
        None when the run cannot be found, or when any of them changed too recently to
        tell (see _settled_version). A view read after this call is at least as new as
        the version it returned."""
        if not (is_safe_id(thread_id) and is_safe_id(run_id)):
            return None
        run_dir = f"{self._root_path}/{thread_id}/{RUNS}/{run_id}"
        return self._settled_version(
            ((run_dir, True), (f"{run_dir}/{STATUS}", True), (f"{run_dir}/{STEPS}", False))
        )

    def messages_version(self, thread_id: str) -> FilesVersion | None:
        """A value that changes whenever the thread's messages may have: one `stat` of
        its log, which only ever grows (or is replaced whole by store_check's repair).
        None for an unknown thread, or one whose log changed too recently to tell. A read
        after this call is at least as new as the version it returned."""
        if not is_safe_id(thread_id):
            return None
        return self._settled_version(((f"{self._root_path}/{thread_id}/{MESSAGES}", True),))

    def _settled_version(self, watched: Iterable[tuple[str, bool]]) -> FilesVersion | None:
        """The `stat`s of the `watched` (path, required) entries, or None when a required
        one is missing or any changed in the last STAT_SETTLED_SECONDS: a second change
        within one timestamp tick could leave them as they were, so only a settled
        version is proof that nothing changed since. Always None on a filesystem not
        known to show every change in `stat` at once (a network filesystem's client may
        answer from a cache)."""
        if not self.stats_are_current:
            return None
        settled_before = time.time_ns() - int(STAT_SETTLED_SECONDS * 1e9)
        version: list[tuple[int, int, int, int, int] | None] = []
        for path, required in watched:
            try:
                found = os.stat(path, follow_symlinks=False)
            except OSError:
                if required:
                    return None
                version.append(None)  # e.g. no steps yet: creating them changes the parent
                continue
            if found.st_ctime_ns > settled_before or found.st_mtime_ns > settled_before:
                return None
            version.append(
                (found.st_dev, found.st_ino, found.st_ctime_ns, found.st_mtime_ns, found.st_size)
            )
        return tuple(version)

    def read_draft(self, thread_id: str, run_id: str) -> str | None:
        """The text a running run has produced so far, or None."""
        draft = self.draft(thread_id, run_id)
        return draft.text if draft else None

    # -------------------------------------------------------------- heartbeats

    def record_heartbeat(self, heartbeat: WorkerHeartbeat) -> None:
        if not is_safe_id(heartbeat.worker_id):
            raise StoreError(f"Unsafe worker ID {heartbeat.worker_id!r}.")
        with self._io("recording a worker heartbeat"), self._store_dir(WORKERS_DIR) as dir_fd:
            body = files.encode_json(heartbeat.to_dict())
            files.write_bytes(dir_fd, f"{heartbeat.worker_id}.json", body, durable=False)

    def remove_heartbeat(self, worker_id: str) -> None:
        if is_safe_id(worker_id):
            with self._io("removing a worker heartbeat"), self._store_dir(WORKERS_DIR) as fd:
                files.remove(fd, f"{worker_id}.json")

    def heartbeats(self) -> list[WorkerHeartbeat]:
        """Every worker's last heartbeat, most recent first."""
        found = []
        with self._io("reading worker heartbeats"), self._store_dir(WORKERS_DIR) as dir_fd:
            for name in files.list_names(dir_fd):
                if not (name.endswith(".json") and is_safe_id(name[:-5])):
                    continue
                try:
                    found.append(WorkerHeartbeat.from_dict(files.read_json(dir_fd, name)))
                except (Missing, BadRecord, KeyError, TypeError, ValueError):
                    continue
        return sorted(found, key=lambda beat: beat.seen_at, reverse=True)

    def live_workers(self, *, now: float | None = None) -> list[WorkerHeartbeat]:
        """The run workers that are alive, most recent first (see worker_is_alive)."""
        now = time.time() if now is None else now
        return [beat for beat in self.heartbeats() if worker_is_alive(beat, now)]

    # -------------------------------------------------------------------- steps

    def steps_dir(self, thread_id: str, run_id: str) -> Path:
        if not is_safe_id(thread_id):
            raise ThreadNotFound(thread_id)
        if not is_safe_id(run_id):
            raise RunNotFound(run_id)
        return self.root / thread_id / RUNS / run_id / STEPS

    def append_step(self, thread_id: str, run_id: str, step: RunStep) -> RunStep:
        self._check_owner(step.thread_id, thread_id, "step")
        self._check_owner(step.run_id, run_id, "step", what="run")
        if not is_safe_id(step.id):
            raise StoreError(f"Refusing to create a step with the unsafe ID {step.id!r}.")
        with (
            self._locked_run(f"adding a step to run {run_id}", thread_id, run_id) as (_, run_fd),
            files.opened_dir(run_fd, (STEPS,), create=True) as steps_fd,
        ):
            run = self._read_run(run_fd)
            if run.status.is_terminal:
                raise RunInTerminalState(run)  # an ended run gains no open step
            try:
                files.write_record(steps_fd, f"{step.id}.json", step.to_dict(), exclusive=True)
            except FileExistsError:
                raise AlreadyExists(step.id) from None
        return step

    def list_steps(self, thread_id: str, run_id: str) -> list[RunStep]:
        """Steps by created_at, ties in creation order (our IDs are time-ordered; the
        reference's carry no finer order, so ID order is the fallback)."""
        with self._reading_run(f"listing steps of {run_id}", thread_id, run_id) as run_fd:
            return self._read_steps(run_fd)

    def get_step(self, thread_id: str, run_id: str, step_id: str) -> RunStep:
        with self._reading_run(f"reading step {step_id}", thread_id, run_id) as run_fd:
            if not is_safe_id(step_id):
                raise RunStepNotFound(step_id)
            try:
                with files.opened_dir(run_fd, (STEPS,)) as steps_fd:
                    return _load(RunStep, steps_fd, f"{step_id}.json")
            except Missing:
                raise RunStepNotFound(step_id) from None

    def update_step_status(
        self,
        thread_id: str,
        run_id: str,
        step_id: str,
        status: RunStepStatus | str,
        error: RunError | None = None,
    ) -> RunStep:
        status = RunStepStatus(status)
        with self._locked_run(f"updating step {step_id}", thread_id, run_id) as (_, run_fd):
            if not is_safe_id(step_id):
                raise RunStepNotFound(step_id)
            try:
                with files.opened_dir(run_fd, (STEPS,)) as steps_fd:
                    step = _load(RunStep, steps_fd, f"{step_id}.json")
            except Missing:
                raise RunStepNotFound(step_id) from None
            step = _with_step_status(step, status)
            if error is not None:
                step.last_error = error
            self._write_step(run_fd, step)
            return step

    def _read_steps(self, run_fd: int) -> list[RunStep]:
        try:
            steps_fd = files.open_dir(run_fd, (STEPS,))
        except Missing:
            return []
        try:
            with os.scandir(steps_fd) as entries:
                names = [
                    e.name for e in entries if e.name.endswith(".json") and is_safe_id(e.name[:-5])
                ]
            steps = []
            for name in names:
                try:
                    steps.append(_load(RunStep, steps_fd, name))
                except (Missing, BadRecord):
                    continue  # store check reports damaged steps
        finally:
            os.close(steps_fd)
        steps.sort(key=lambda step: (step.created_at, step.id))
        return steps

    def _write_step(self, run_fd: int, step: RunStep) -> None:
        with files.opened_dir(run_fd, (STEPS,), create=True) as steps_fd:
            files.write_record(steps_fd, f"{step.id}.json", step.to_dict(), exclusive=False)

    # ---------------------------------------------------------------- integrity

    def check(self) -> IntegrityReport:
        """Walk the whole store and report damage (see stores.integrity)."""
        return check_store(self)

    def repair(self, *, grace_seconds: float = TEMP_FILE_GRACE_SECONDS) -> list[str]:
        return repair_store(self, grace_seconds=grace_seconds)

    # ------------------------------------------------------------------ helpers

    def _check_message(self, message: ThreadMessage, thread_id: str) -> None:
        self._check_owner(message.thread_id, thread_id, "message")
        if not is_safe_id(message.id):
            raise StoreError(f"Refusing to store a message with the unsafe ID {message.id!r}.")

    @staticmethod
    def _check_owner(owner: str, expected: str, record: str, what: str = "thread") -> None:
        if owner != expected:
            raise StoreError(
                f"The {record} belongs to {what} {owner!r}, not {expected!r}; refusing to store it."
            )


def _with_status(run: Run, status: RunStatus, error: RunError | None) -> Run:
    run = replace(run, status=status)
    stamp = now()
    if status is RunStatus.IN_PROGRESS and run.started_at is None:
        run.started_at = stamp
    field_name = STATUS_TIMESTAMP_FIELD.get(status.value)
    if field_name:
        setattr(run, field_name, stamp)
    if error is not None:
        run.last_error = error
    return run


_STEP_STATUS_FOR_RUN = {
    RunStatus.COMPLETED: RunStepStatus.COMPLETED,
    RunStatus.CANCELLED: RunStepStatus.CANCELLED,
    RunStatus.EXPIRED: RunStepStatus.EXPIRED,
}


def _ids(ref: RunRef) -> tuple[str, str]:
    return ref.thread_id, ref.run_id


def _entry_name(run_id: str, thread_id: str) -> str:
    return f"{run_id}.{thread_id}"


def _ref_from_entry(name: str) -> RunRef | None:
    run_id, _, thread_id = name.partition(".")
    if is_safe_id(run_id) and is_safe_id(thread_id):
        return RunRef(run_id=run_id, thread_id=thread_id)
    return None


def worker_is_alive(beat: WorkerHeartbeat, now: float) -> bool:
    """A worker lives if its heartbeat is recent (workers write one every 2 s) and, when
    it runs on this host, its process still exists (a killed worker is seen at once)."""
    if now - beat.seen_at > WORKER_ALIVE_SECONDS:
        return False
    if beat.host == socket.gethostname() and beat.pid > 0:
        try:
            os.kill(beat.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
    return True


def _name_message(step: RunStep, message_id: str | None) -> None:
    step.step_details = {
        "type": "message_creation",
        "message_creation": {"message_id": message_id},
    }


def _with_step_status(step: RunStep, status: RunStepStatus) -> RunStep:
    step = replace(step, status=status)
    field_name = STATUS_TIMESTAMP_FIELD.get(status.value)
    if field_name:
        setattr(step, field_name, now())
    return step


R = TypeVar("R", Thread, Run, RunStep)


def _load(record: type[R], dir_fd: int, name: str) -> R:
    """Read and parse one record; a file that holds no such record is a BadRecord."""
    data = files.read_json(dir_fd, name)
    try:
        return record.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise BadRecord(f"{name}: {error!r}") from None


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 19):
        raise InvalidCursor(cursor)
    return int(cursor)


def _index_entry(line: bytes) -> str | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    thread_id = value.get("id") if isinstance(value, dict) else None
    return thread_id if is_safe_id(thread_id) else None


def _message_id(line: bytes) -> str | None:
    message = _parse_message(line)
    return message.id if message is not None else None


def _parse_message(line: bytes) -> ThreadMessage | None:
    """A message from one log line, or None for a blank, torn or foreign line."""
    line = line.strip()
    if not line:
        return None
    try:
        value: Any = json.loads(line)
        if isinstance(value, dict) and is_safe_id(value.get("id")):
            return ThreadMessage.from_dict(value)
    except (ValueError, TypeError, KeyError):
        pass
    return None
