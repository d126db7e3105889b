"""The store's health check: what a crash, a disk or another program left behind.

It walks the whole store (it is an operator tool, not a page), reports what it finds,
and `repair` only ever removes what is disposable: temp files old enough that no writer
can still own them, the remains of deleted threads, and the derived thread index and
journal, rebuilt from the records.

`check_store(store, full=True)` (what `manage.py store_check` runs) also looks at the
runs as a service depends on them: runs left in progress or cancelling by a worker that
died, queued runs the work queue does not list, and a catalog journal that disagrees with
the records. `repair` ends stuck runs through the store's own operations, as a worker's
reaper would (in progress -> failed, saying the worker was lost; cancelling ->
cancelled), and sets aside torn message-log lines (not JSON at all) in a quarantine
file instead of deleting them. Nothing that parses is ever deleted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import files
from .catalog import JOURNAL, Catalog
from .errors import StoreError
from .files import TEMP_PREFIX
from .ids import is_safe_id
from .records import Lease, Run, RunRef, RunStatus, RunStep, Thread

if TYPE_CHECKING:
    from .thread_store import ThreadStore

# A temp file younger than this may belong to a write in flight.
TEMP_FILE_GRACE_SECONDS = 60.0
# A worker that wrote a heartbeat this recently is alive (workers write one every 2 s),
# unless it ran on this host and its process is gone.
# A queued run waiting this long while no worker is alive is worth a note.
WAITING_NOTE_SECONDS = 180.0
# Records changed this recently may not have reached the journal yet (it is appended
# just after the record is published): a full check does not hold that against it.
JOURNAL_LAG_SECONDS = 5.0
# Where repair sets aside torn message-log lines, under the store's own directory.
QUARANTINE_DIR = "quarantine"
# The non-terminal statuses only a live worker moves on (requires_action waits for the
# client, not a worker).
WORKER_HELD = frozenset({RunStatus.IN_PROGRESS, RunStatus.CANCELLING})


@dataclass(frozen=True)
class Problem:
    # Always: unparsable_line | orphan_temp_file | bad_record | unindexed_thread | symlink.
    # With full=True also: stuck_run | unqueued_run | stale_journal | trash_dir.
    kind: str
    path: str  # relative to the store root
    detail: str


@dataclass
class IntegrityReport:
    problems: list[Problem] = field(default_factory=list)
    # Worth knowing, but not damage (queued runs waiting while no worker is alive).
    notes: list[Problem] = field(default_factory=list)
    threads: int = 0
    messages: int = 0
    runs: int = 0
    steps: int = 0
    live_workers: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def of_kind(self, kind: str) -> list[Problem]:
        return [problem for problem in self.problems if problem.kind == kind]


def check_store(
    store: ThreadStore,
    *,
    full: bool = False,
    now: float | None = None,
    journal_lag: float = JOURNAL_LAG_SECONDS,
) -> IntegrityReport:
    """Walk the store and report what is damaged or left behind. With `full`, also what a
    running service trips over: stuck or unqueued runs, a stale journal, the remains of
    deleted threads.

    Leases and the journal are judged as of `now` (default: the time of the call); a
    record changed less than `journal_lag` seconds before it is not held against the
    journal, whose line may still be on its way."""
    from .thread_store import (
        LEASE,
        MESSAGES,
        META,
        QUEUE_DIR,
        RUNS,
        STATUS,
        STEPS,
        STORE_DIR,
        THREAD_INDEX,
        TRASH_PREFIX,
    )

    root = store.root
    report = IntegrityReport()
    now = time.time() if now is None else now
    runs_seen: list[tuple[Run, Path]] = []
    threads_seen: dict[str, tuple[Thread, Path]] = {}

    def rel(path: Path) -> str:
        return str(path.relative_to(root))

    def record(
        path: Path, parse: type[Thread] | type[Run] | type[RunStep]
    ) -> Thread | Run | RunStep | None:
        try:
            return parse.from_dict(json.loads(path.read_bytes()))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            report.problems.append(Problem("bad_record", rel(path), f"does not parse: {error}"))
        except OSError as error:
            report.problems.append(Problem("bad_record", rel(path), f"unreadable: {error}"))
        return None

    def scan_dir(directory: Path) -> list[os.DirEntry[str]]:
        with os.scandir(directory) as entries:
            found = []
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX):
                    age = time.time() - entry.stat(follow_symlinks=False).st_mtime
                    report.problems.append(
                        Problem("orphan_temp_file", rel(Path(entry.path)), f"{age:.0f} s old")
                    )
                elif entry.is_symlink():
                    report.problems.append(
                        Problem("symlink", rel(Path(entry.path)), "ignored by the store")
                    )
                else:
                    found.append(entry)
            return found

    indexed = _indexed_ids(root / STORE_DIR / THREAD_INDEX)
    scan_dir(root / STORE_DIR)
    for entry in scan_dir(root):
        if full and entry.name.startswith(TRASH_PREFIX) and entry.is_dir(follow_symlinks=False):
            report.problems.append(
                Problem("trash_dir", entry.name, "the remains of a deleted thread")
            )
            continue
        if not (is_safe_id(entry.name) and entry.is_dir(follow_symlinks=False)):
            continue
        thread_dir = Path(entry.path)
        names = {e.name: e for e in scan_dir(thread_dir)}
        if META not in names:
            continue  # not a thread (or a creation that never finished)
        report.threads += 1
        thread = record(thread_dir / META, Thread)
        if isinstance(thread, Thread):
            threads_seen[entry.name] = (thread, thread_dir / META)
        if indexed is not None and entry.name not in indexed:
            report.problems.append(
                Problem("unindexed_thread", rel(thread_dir), "missing from the thread index")
            )
        if MESSAGES in names:
            _check_log(thread_dir / MESSAGES, rel(thread_dir / MESSAGES), report)
        if RUNS in names and names[RUNS].is_dir(follow_symlinks=False):
            for run_entry in scan_dir(thread_dir / RUNS):
                run_dir = Path(run_entry.path)
                run_names = {e.name: e for e in scan_dir(run_dir)}
                if STATUS in run_names:
                    report.runs += 1
                    run = record(run_dir / STATUS, Run)
                    if isinstance(run, Run):
                        runs_seen.append((run, run_dir))
                if STEPS in run_names:
                    for step_entry in scan_dir(run_dir / STEPS):
                        report.steps += 1
                        record(Path(step_entry.path), RunStep)
    if full:
        _check_runs(store, report, runs_seen, now, lease_name=LEASE, queue_dir=QUEUE_DIR)
        _check_journal(
            root / STORE_DIR / JOURNAL,
            report,
            threads_seen,
            runs_seen,
            now,
            lag=journal_lag,
            status_name=STATUS,
        )
    return report


def live_workers(store: ThreadStore, *, now: float | None = None) -> set[str]:
    """IDs of the run workers that are alive (ThreadStore.live_workers)."""
    try:
        return {beat.worker_id for beat in store.live_workers(now=now)}
    except StoreError:
        return set()


def _read_lease(path: Path) -> Lease | None:
    try:
        return Lease.from_dict(json.loads(path.read_bytes()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_runs(
    store: ThreadStore,
    report: IntegrityReport,
    runs: list[tuple[Run, Path]],
    now: float,
    *,
    lease_name: str,
    queue_dir: str,
) -> None:
    from .thread_store import STORE_DIR

    alive = live_workers(store, now=now)
    report.live_workers = len(alive)
    try:
        queued_markers = set(os.listdir(store.root / STORE_DIR / queue_dir))
    except OSError:
        queued_markers = set()
    for run, run_dir in runs:
        where = str(run_dir.relative_to(store.root))
        if run.status is RunStatus.QUEUED:
            if f"{run.id}.{run.thread_id}" not in queued_markers:
                report.problems.append(
                    Problem(
                        "unqueued_run",
                        where,
                        "queued, but missing from the work queue: no worker will ever take it",
                    )
                )
            elif not alive and now - run.created_at >= WAITING_NOTE_SECONDS:
                waited = now - run.created_at
                report.notes.append(
                    Problem(
                        "waiting_run",
                        where,
                        f"queued for {waited:.0f} s and no run worker is alive: start one",
                    )
                )
            continue
        if run.status not in WORKER_HELD:
            continue
        lease = _read_lease(run_dir / lease_name)
        if lease is not None and lease.expires_at > now:
            continue  # held; if its worker died, the lease runs out and a reaper ends it
        if lease is not None and lease.worker_id in alive:
            continue  # its worker lives and renews its lease
        holder = f"worker {lease.worker_id}'s lease ran out" if lease else "no worker holds it"
        report.problems.append(
            Problem(
                "stuck_run",
                where,
                f"{run.status.value}, but {holder} and no live worker has it",
            )
        )


def _check_journal(
    journal: Path,
    report: IntegrityReport,
    threads: dict[str, tuple[Thread, Path]],
    runs: list[tuple[Run, Path]],
    now: float,
    *,
    lag: float,
    status_name: str,
) -> None:
    """The catalog's journal must tell what the records tell (else overview counts and
    searches are wrong); records changed less than `lag` seconds before `now` are given
    time."""

    def settled(path: Path) -> bool:
        try:
            return now - path.stat().st_mtime >= lag
        except OSError:
            return False

    catalog = Catalog(journal)
    try:
        catalog.refresh()
    except OSError as error:
        report.problems.append(Problem("stale_journal", journal.name, f"unreadable: {error}"))
        return
    wrong: list[str] = []
    for thread_id, (thread, meta_path) in threads.items():
        summary = catalog.threads.get(thread_id)
        if (summary is None or summary.metadata != thread.metadata) and settled(meta_path):
            wrong.append(f"thread {thread_id}")
    for run, run_dir in runs:
        summary_run = catalog.runs.get(run.id)
        stale = summary_run is None or summary_run.status is not run.status
        if stale and settled(run_dir / status_name):
            wrong.append(f"run {run.id}")
    gone = [thread_id for thread_id in catalog.threads if thread_id not in threads]
    for thread_id in gone:
        if not (journal.parent.parent / thread_id).exists():
            wrong.append(f"thread {thread_id} (deleted)")
    if wrong:
        shown = ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
        report.problems.append(
            Problem(
                "stale_journal",
                str(journal.relative_to(journal.parent.parent)),
                f"the catalog disagrees with the records about {shown}",
            )
        )


def _indexed_ids(index: Path) -> set[str] | None:
    try:
        data = index.read_bytes()
    except FileNotFoundError:
        return None  # rebuilt on first listing
    ids = set()
    for line in data.splitlines():
        try:
            ids.add(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            continue
    return ids


def _check_log(path: Path, name: str, report: IntegrityReport) -> None:
    data = path.read_bytes()
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            if not isinstance(value, dict) or not is_safe_id(value.get("id")):
                raise ValueError("not a message record")
        except ValueError as error:
            detail = f"line {number} does not parse ({error}); it is skipped when reading"
            report.problems.append(Problem("unparsable_line", name, detail))
            continue
        report.messages += 1


def repair_store(
    store: ThreadStore,
    *,
    grace_seconds: float = TEMP_FILE_GRACE_SECONDS,
    full: bool = False,
    now: float | None = None,
) -> list[str]:
    """Remove stale temp files and rebuild the thread index if it misses threads. With
    `full`, also: remove what deleted threads left, set torn message-log lines aside,
    end stuck runs, put unqueued runs back in the queue and rebuild a stale journal.
    Never deletes a file or line that parses. Returns what was done, one line each.

    `grace_seconds` is how long a write may still be in flight; it also bounds the
    journal's lag (0: nothing else runs, so any disagreement is real). `now` is the
    moment the repair judges by, as for check_store."""
    report = check_store(store, full=full, now=now, journal_lag=journal_lag_for(grace_seconds))
    done = []
    for problem in report.of_kind("orphan_temp_file"):
        path = store.root / problem.path
        try:
            if time.time() - path.stat(follow_symlinks=False).st_mtime >= grace_seconds:
                path.unlink()
                done.append(f"removed stale temp file {problem.path}")
        except FileNotFoundError:
            continue
    if not full:
        if report.of_kind("unindexed_thread"):
            count = store.rebuild_index()
            done.append(f"rebuilt the thread index ({count} threads)")
        return done
    for problem in report.of_kind("trash_dir"):
        shutil.rmtree(store.root / problem.path, ignore_errors=True)
        done.append(f"removed the remains of a deleted thread, {problem.path}")
    torn_logs = {p.path for p in report.of_kind("unparsable_line")}
    for path in sorted(torn_logs):
        moved = _quarantine_torn_lines(store, path)
        if moved:
            done.append(f"set {moved} torn line(s) of {path} aside in .threadsite/quarantine")
    if report.of_kind("unindexed_thread"):
        count = store.rebuild_index()
        done.append(f"rebuilt the thread index ({count} threads)")
    for problem in report.of_kind("stuck_run") + report.of_kind("unqueued_run"):
        thread_id, _, run_id = problem.path.split(os.sep)
        try:
            ended = store.reap_run(RunRef(run_id=run_id, thread_id=thread_id), run_timeout=math.inf)
        except StoreError as error:
            done.append(f"could not repair run {run_id}: {error}")
            continue
        if problem.kind == "unqueued_run":
            done.append(f"put queued run {run_id} back in the work queue")
        elif ended is not None:
            done.append(f"ended stuck run {run_id}: {ended.status.value}")
    if report.of_kind("stale_journal"):
        events = store.rebuild_journal()
        done.append(f"rebuilt the catalog journal from the records ({events} events)")
    return done


def journal_lag_for(grace_seconds: float) -> float:
    """How long a record may wait for its journal line when writes in flight are given
    `grace_seconds`."""
    return max(0.0, min(grace_seconds, JOURNAL_LAG_SECONDS))


def _quarantine_torn_lines(store: ThreadStore, log_path: str) -> int:
    """Move the lines of one message log that are not JSON at all (torn by a crash)
    into .threadsite/quarantine/, under the thread's write lock, so that the log holds
    only records. Lines that are JSON, even if not messages, stay. Returns how many
    lines moved."""
    from .thread_store import STORE_DIR, THREAD_LOCK

    parts = Path(log_path).parts
    if len(parts) != 2 or not is_safe_id(parts[0]):
        return 0
    thread_id, name = parts
    root_fd = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with (
            files.opened_dir(root_fd, (thread_id,)) as thread_fd,
            files.exclusive_lock(thread_fd, THREAD_LOCK),
        ):
            data = files.read_bytes(thread_fd, name)
            kept, torn = [], []
            for line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
                if line.strip() and not _is_json(line):
                    torn.append(line)
                else:
                    kept.append(line)
            if not torn:
                return 0
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            with files.opened_dir(root_fd, (STORE_DIR, QUARANTINE_DIR), create=True) as q_fd:
                files.write_bytes(
                    q_fd,
                    f"{thread_id}.{stamp}.{os.urandom(3).hex()}.lines",
                    b"".join(line + b"\n" for line in torn),
                    exclusive=True,
                )
            files.write_bytes(thread_fd, name, b"".join(line + b"\n" for line in kept))
            return len(torn)
    except (files.Missing, OSError):
        return 0
    finally:
        os.close(root_fd)


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True
