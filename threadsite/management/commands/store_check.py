"""`python manage.py store_check [--repair]`: is the thread store healthy?

Exit status: 0 healthy, 1 problems found (or left after --repair), 2 the store cannot
be used at all (missing, unwritable, or on a filesystem whose locks do not hold).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from stores import StoreError, check_store_directory
from stores.integrity import (
    TEMP_FILE_GRACE_SECONDS,
    IntegrityReport,
    check_store,
    journal_lag_for,
    repair_store,
)
from threadsite.services import get_store

HEALTHY, PROBLEMS, UNUSABLE = 0, 1, 2
SHOWN_PER_KIND = 20

WHAT_REPAIR_DOES = {
    "orphan_temp_file": "removed once older than the grace period",
    "trash_dir": "removed (the thread was deleted)",
    "unparsable_line": "torn lines are set aside in .threadsite/quarantine; JSON lines stay",
    "unindexed_thread": "the thread index is rebuilt",
    "stuck_run": "ended: in progress -> failed (worker lost), cancelling -> cancelled",
    "unqueued_run": "put back in the work queue",
    "stale_journal": "the journal is rebuilt from the records",
    "bad_record": "left alone: restore it from a backup, or remove it by hand",
    "symlink": "left alone: the store ignores it",
}


class Command(BaseCommand):
    help = (
        "Check the thread store: message-log lines that do not parse, orphan temp files, "
        "records that do not parse, runs stuck without a live worker, a stale catalog. "
        "--repair sweeps what is disposable and ends stuck runs; it never deletes data that "
        "parses. Exit status 0 means healthy."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--repair",
            action="store_true",
            help="Repair what can be repaired, then check again.",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=TEMP_FILE_GRACE_SECONDS,
            metavar="SECONDS",
            help="Writes younger than this may still be in flight: their temp files are "
            "kept, and a journal that has not caught up with them is given a few seconds "
            f"(default {TEMP_FILE_GRACE_SECONDS:g}). 0 when nothing else runs.",
        )

    def handle(self, *args: Any, repair: bool, grace: float, **options: Any) -> None:
        try:
            store = get_store()
            check_store_directory(store.root)
        except StoreError as error:
            self.stderr.write(str(error))
            sys.exit(UNUSABLE)
        self.stdout.write(f"Checking the thread store at {store.root}")
        grace = max(0.0, grace)
        lag = journal_lag_for(grace)
        try:
            report = check_store(store, full=True, journal_lag=lag)
            if repair and not report.ok:
                self._show(report)
                # The check after the repair judges by the repair's clock: a record that
                # settled in between was not the repair's to fix, and is not reported.
                repaired_at = time.time()
                done = repair_store(store, grace_seconds=grace, full=True, now=repaired_at)
                self.stdout.write("Repair:")
                for line in done or ["nothing could be repaired automatically"]:
                    self.stdout.write(f"  {line}")
                report = check_store(store, full=True, now=repaired_at, journal_lag=lag)
                self.stdout.write("After repair:")
        except StoreError as error:
            self.stderr.write(f"The check could not finish: {error}")
            sys.exit(UNUSABLE)
        self._show(report)
        if not report.ok:
            sys.exit(PROBLEMS)

    def _show(self, report: IntegrityReport) -> None:
        self.stdout.write(
            f"  {report.threads} threads, {report.messages} messages, {report.runs} runs, "
            f"{report.steps} steps; {report.live_workers} live run worker(s)"
        )
        for note in report.notes:
            self.stdout.write(f"  note: {note.kind}: {note.path}: {note.detail}")
        if report.ok:
            self.stdout.write(self.style.SUCCESS("  healthy: no problems found"))
            return
        kinds = Counter(problem.kind for problem in report.problems)
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        self.stdout.write(self.style.ERROR(f"  {len(report.problems)} problem(s): {summary}"))
        for kind in sorted(kinds):
            found = report.of_kind(kind)
            self.stdout.write(f"  {kind} ({WHAT_REPAIR_DOES.get(kind, 'reported only')}):")
            for problem in found[:SHOWN_PER_KIND]:
                self.stdout.write(f"    {problem.path}: {problem.detail}")
            if len(found) > SHOWN_PER_KIND:
                self.stdout.write(f"    ... and {len(found) - SHOWN_PER_KIND} more")
