"""The store's health check: what a crash, a disk or another program left behind.

It walks the whole store (it is an operator tool, not a page), reports what it finds,
and `repair` only ever removes what is disposable: temp files old enough that no writer
can still own them, and the derived thread index, rebuilt from the threads.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .files import TEMP_PREFIX
from .ids import is_safe_id
from .records import Run, RunStep, Thread

if TYPE_CHECKING:
    from .thread_store import ThreadStore

# A temp file younger than this may belong to a write in flight.
TEMP_FILE_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class Problem:
    kind: str  # unparsable_line | orphan_temp_file | bad_record | unindexed_thread | symlink
    path: str  # relative to the store root
    detail: str


@dataclass
class IntegrityReport:
    problems: list[Problem] = field(default_factory=list)
    threads: int = 0
    messages: int = 0
    runs: int = 0
    steps: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def of_kind(self, kind: str) -> list[Problem]:
        return [problem for problem in self.problems if problem.kind == kind]


def check_store(store: ThreadStore) -> IntegrityReport:
    from .thread_store import MESSAGES, META, RUNS, STATUS, STEPS, STORE_DIR, THREAD_INDEX

    root = store.root
    report = IntegrityReport()

    def rel(path: Path) -> str:
        return str(path.relative_to(root))

    def record(path: Path, parse: type[Thread] | type[Run] | type[RunStep]) -> bool:
        try:
            parse.from_dict(json.loads(path.read_bytes()))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            report.problems.append(Problem("bad_record", rel(path), f"does not parse: {error}"))
            return False
        except OSError as error:
            report.problems.append(Problem("bad_record", rel(path), f"unreadable: {error}"))
            return False
        return True

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
        if not (is_safe_id(entry.name) and entry.is_dir(follow_symlinks=False)):
            continue
        thread_dir = Path(entry.path)
        names = {e.name: e for e in scan_dir(thread_dir)}
        if META not in names:
            continue  # not a thread (or a creation that never finished)
        report.threads += 1
        record(thread_dir / META, Thread)
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
                    record(run_dir / STATUS, Run)
                if STEPS in run_names:
                    for step_entry in scan_dir(run_dir / STEPS):
                        report.steps += 1
                        record(Path(step_entry.path), RunStep)
    return report


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
    store: ThreadStore, *, grace_seconds: float = TEMP_FILE_GRACE_SECONDS
) -> list[str]:
    """Remove stale temp files and rebuild the thread index if it misses threads.
    Never touches a file that parses. Returns what was done, one line each."""
    report = check_store(store)
    done = []
    for problem in report.of_kind("orphan_temp_file"):
        path = store.root / problem.path
        try:
            if time.time() - path.stat(follow_symlinks=False).st_mtime >= grace_seconds:
                path.unlink()
                done.append(f"removed stale temp file {problem.path}")
        except FileNotFoundError:
            continue
    if report.of_kind("unindexed_thread"):
        count = store.rebuild_index()
        done.append(f"rebuilt the thread index ({count} threads)")
    return done
