"""The store against a model: Hypothesis drives random sequences of thread creation,
message appends, run creation, status transitions, claims, cancels, completions, steps
and store reopenings, and compares the store with a plain in-memory model after every
step.

Any step may crash: the Nth system call that changes the disk (open for writing, write,
fsync, rename, link, unlink, mkdir, ftruncate) and every one after it fail as if the
process had died there, and a crashing write may leave part of its bytes behind (a torn
line). Nothing after a crash runs (no cleanup, no undo), only closing files, as the kernel
does for a dead process, which also drops its locks. The store is then reopened, and the
interrupted operation must show as either done or not done (never half a record); the
model takes whichever it finds. Every other record must be exactly as the model says.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)
from reliability_testkit import record_figures, scaled

from stores import (
    RunInTerminalState,
    RunNotFound,
    RunRef,
    RunStatus,
    RunStepNotFound,
    RunStepStatus,
    ThreadBusy,
    ThreadNotFound,
    ThreadStore,
    new_message,
    new_run,
    new_step,
    new_thread,
)
from stores import integrity as integrity_module
from stores.integrity import check_store, repair_store

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
MUTATING = ("write", "fsync", "rename", "replace", "link", "unlink", "mkdir", "ftruncate")
ALLOWED_AFTER_CRASH = {"orphan_temp_file", "unparsable_line", "unindexed_thread", "stale_journal"}
STATUSES = [status.value for status in RunStatus]
TERMINAL = {status.value for status in RunStatus if status.is_terminal}
STEP_STATUSES = [status.value for status in RunStepStatus]
UNMANAGED = {"stuck_run", "unqueued_run"}
FIGURES = {"examples": 0, "steps": 0, "crashes": 0, "torn_writes": 0}


class SimulatedCrash(BaseException):
    """The process died here. A BaseException, so no `except OSError` cleanup runs."""


class CrashingOS:
    """While armed, the `at`-th call that changes the disk, and every later one, dies."""

    def __init__(self, at: int | None, tear: bool, *, rehearsal: bool = False) -> None:
        self.at = at
        self.tear = tear
        self.rehearsal = rehearsal  # only counting: fsync need not reach the disk
        self.calls = 0
        self.crashed = False
        self.torn = False

    def _strike(self) -> bool:
        if self.crashed:
            return True
        self.calls += 1
        if self.at is not None and self.calls >= self.at:
            self.crashed = True
            return True
        return False

    @contextmanager
    def armed(self) -> Iterator[None]:
        real = {name: getattr(os, name) for name in (*MUTATING, "open")}

        def guard(name: str) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                if self._strike():
                    if name == "write" and self.tear and not self.torn and len(args[1]) > 1:
                        self.torn = True
                        real["write"](args[0], bytes(args[1])[: len(args[1]) // 2])
                    raise SimulatedCrash(name)
                if name == "fsync" and self.rehearsal:
                    return None
                return real[name](*args, **kwargs)

            return call

        def opening(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & WRITE_FLAGS and self._strike():
                raise SimulatedCrash("open")
            return real["open"](path, flags, *args, **kwargs)

        try:
            for name in MUTATING:
                setattr(os, name, guard(name))
            os.open = opening  # type: ignore[assignment]
            yield
        finally:
            for name, function in real.items():
                setattr(os, name, function)


# ------------------------------------------------------------------------- model


@dataclass
class MMessage:
    id: str
    role: str
    text: str
    status: str = "completed"
    run_id: str | None = None


@dataclass
class MRun:
    id: str
    status: str = "queued"
    held: bool = False  # a worker's lease (claimed, never lapsing in this test)
    steps: dict[str, str] = field(default_factory=dict)  # in creation order


@dataclass
class MThread:
    id: str
    metadata: dict[str, str]
    messages: list[MMessage] = field(default_factory=list)
    runs: dict[str, MRun] = field(default_factory=dict)

    def active(self) -> MRun | None:
        return next((r for r in self.runs.values() if r.status not in TERMINAL), None)


text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
metadata = st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), text, max_size=3)
# Where a step crashes: None, or a point in its disk changes, in per cent of them.
crash_at = st.one_of(st.none(), st.sampled_from(range(1, 101)))


class StoreModel(RuleBasedStateMachine):
    threads = Bundle("threads")
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="threadsite-model-"))
        self.store = ThreadStore(self.dir)
        self.model: dict[str, MThread] = {}
        self.crashed_ever = False
        FIGURES["examples"] += 1

    def teardown(self) -> None:
        try:
            if self.model:
                # Repair (as store_check --repair, stuck runs included) loses nothing.
                repair_store(self.store, grace_seconds=0, full=True)
                report = check_store(ThreadStore(self.dir), full=True)
                assert report.ok, report.problems
                for thread in self.model.values():
                    stored = {m.id for m in self.store.list_messages(thread.id)}
                    assert {m.id for m in thread.messages} <= stored
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ----------------------------------------------------------- crash plumbing

    def attempt(
        self, at: int | None, tear: bool, call: Callable[[ThreadStore], Any]
    ) -> tuple[bool, Any]:
        """Run `call` on the store with a crash `at` per cent of the way through its
        disk changes (counted first on a copy of the store): (crashed, result or error)."""
        FIGURES["steps"] += 1
        point = None
        if at is not None:
            rehearsal = Path(tempfile.mkdtemp(prefix="threadsite-rehearsal-")) / "store"
            try:
                shutil.copytree(self.dir, rehearsal, symlinks=True)
                counting = CrashingOS(None, False, rehearsal=True)
                with counting.armed(), suppress(Exception):
                    call(ThreadStore(rehearsal))
            finally:
                shutil.rmtree(rehearsal.parent, ignore_errors=True)
            point = max(1, -(-counting.calls * at // 100))
        crashing = CrashingOS(point, tear)
        try:
            with crashing.armed():
                return False, call(self.store)
        except SimulatedCrash:
            FIGURES["crashes"] += 1
            FIGURES["torn_writes"] += int(crashing.torn)
            self.crashed_ever = True
            self.store = ThreadStore(self.dir)  # the process died: start a new one
            return True, None
        except Exception as error:  # a refusal the model predicts (or a bug it catches)
            return False, error

    def run_of(self, ref: tuple[str, str]) -> MRun:
        return self.model[ref[0]].runs[ref[1]]

    def stored_status(self, ref: tuple[str, str]) -> str:
        return self.store.get_run(*ref).status.value

    def adopt_steps(self, ref: tuple[str, str], new: str, committed: bool) -> None:
        """After a crash: each open step is as before, or as the ending set it (all of
        them once the run's new status, the commit point, is on disk)."""
        run = self.run_of(ref)
        stored = {s.id: s.status.value for s in self.store.list_steps(*ref)}
        for step_id, before in run.steps.items():
            allowed = {new} if committed and before == "in_progress" else {before, new}
            if before != "in_progress":
                allowed = {before}
            assert stored[step_id] in allowed, (step_id, before, stored[step_id])
            run.steps[step_id] = stored[step_id]

    def adopt_replies(self, thread_id: str, run_id: str, committed_cancel: bool) -> None:
        """After a crash: completed replies of the run may have been demoted already."""
        stored = {m.id: m for m in self.store.list_messages(thread_id)}
        for message in self.model[thread_id].messages:
            if message.run_id == run_id and message.role == "assistant":
                found = stored[message.id].status
                allowed = {"incomplete"} if committed_cancel else {message.status, "incomplete"}
                assert found in allowed, (message.id, found)
                message.status = found

    # -------------------------------------------------------------------- rules

    @initialize(target=threads, meta=metadata)
    def first_thread(self, meta: dict[str, str]) -> str:
        thread = self.store.create_thread(new_thread(meta))
        self.model[thread.id] = MThread(thread.id, meta)
        return thread.id

    @rule(target=threads, meta=metadata, at=crash_at)
    def create_thread(self, meta: dict[str, str], at: int | None) -> str:
        thread = new_thread(meta)
        crashed, result = self.attempt(at, False, lambda s: s.create_thread(thread))
        if crashed:
            if thread.id not in self.store.list_thread_ids():
                return thread.id  # never happened: the ID names nothing, like a stale link
        else:
            assert not isinstance(result, Exception), result
        self.model[thread.id] = MThread(thread.id, meta)
        return thread.id

    @rule(thread_id=threads, role=st.sampled_from(["user", "assistant"]), body=text, at=crash_at)
    def append_message(self, thread_id: str, role: str, body: str, at: int | None) -> None:
        message = new_message(thread_id, role, body)
        crashed, result = self.attempt(at, True, lambda s: s.append_message(thread_id, message))
        thread = self.model.get(thread_id)
        if thread is None:
            assert crashed or isinstance(result, ThreadNotFound), result
            return
        if crashed:
            ids = [m.id for m in self.store.list_messages(thread_id)]
            if message.id not in ids:
                return
            assert ids[-1] == message.id
        elif role == "user" and thread.active() is not None:
            assert isinstance(result, ThreadBusy), result
            return
        else:
            assert not isinstance(result, Exception), result
        thread.messages.append(MMessage(message.id, role, body))

    @rule(target=runs, thread_id=threads, at=crash_at)
    def create_run(self, thread_id: str, at: int | None) -> tuple[str, str]:
        run = new_run(thread_id)
        crashed, result = self.attempt(at, False, lambda s: s.create_run(thread_id, run))
        ref = (thread_id, run.id)
        thread = self.model.get(thread_id)
        if thread is None:
            assert crashed or isinstance(result, ThreadNotFound), result
            return ref
        if crashed:
            try:
                assert self.stored_status(ref) == "queued"
            except RunNotFound:
                return ref
        elif thread.active() is not None:
            assert isinstance(result, ThreadBusy), result
            return ref
        else:
            assert not isinstance(result, Exception), result
        thread.runs[run.id] = MRun(run.id)
        return ref

    def known(self, ref: tuple[str, str]) -> bool:
        return ref[0] in self.model and ref[1] in self.model[ref[0]].runs

    @rule(ref=runs, status=st.sampled_from(STATUSES), force=st.booleans(), at=crash_at)
    def transition(self, ref: tuple[str, str], status: str, force: bool, at: int | None) -> None:
        """update_run_status, or, as an operator, force_update_run_status to another
        ending (reopening an ended run to a live status is left out: the thread could
        then hold two active runs, which only an operator's mistake makes)."""
        if force and status not in TERMINAL:
            force = False

        def update(s: ThreadStore) -> Any:
            if force:
                return s.force_update_run_status(*ref, status)
            return s.update_run_status(*ref, status)

        crashed, result = self.attempt(at, False, update)
        if not self.known(ref):
            assert crashed or isinstance(result, (RunNotFound, ThreadNotFound)), result
            return
        run = self.run_of(ref)
        if crashed:
            found = self.stored_status(ref)
            assert found in {run.status, status}, (run.status, status, found)
            status = found
        elif run.status in TERMINAL and not force:
            assert isinstance(result, RunInTerminalState), result
            return
        else:
            assert not isinstance(result, Exception), result
        run.status = status
        if status in TERMINAL:
            run.held = False

    @rule(ref=runs, at=crash_at)
    def claim(self, ref: tuple[str, str], at: int | None) -> None:
        run_ref = RunRef(run_id=ref[1], thread_id=ref[0])
        crashed, result = self.attempt(
            at,
            False,
            lambda s: s.claim_run(
                run_ref, worker_id="worker-1", lease_seconds=3600, run_timeout=3600
            ),
        )
        if not self.known(ref):
            assert crashed or result is None, result
            return
        run = self.run_of(ref)
        if crashed:
            found = self.stored_status(ref)
            assert found == run.status or (run.status == "queued" and found == "in_progress")
            run.status = found
            run.held = run.held or (self.dir / ref[0] / "runs" / ref[1] / "lease.json").exists()
            return
        if run.status != "queued":
            assert result is None, result
            return
        assert result is not None and result.status is RunStatus.IN_PROGRESS, result
        run.status, run.held = "in_progress", True

    def end(self, ref: tuple[str, str], status: str, reply: MMessage | None = None) -> None:
        """What _finish_locked does: the reply, open steps to match, the run's status."""
        thread = self.model[ref[0]]
        run = self.run_of(ref)
        if status != "completed":
            for message in thread.messages:
                if message.run_id == run.id and message.role == "assistant":
                    message.status = "incomplete"
        if reply is not None:
            thread.messages.append(reply)
        step_status = {"completed": "completed", "cancelled": "cancelled"}.get(status, "failed")
        for step_id, step in run.steps.items():
            if step == "in_progress":
                run.steps[step_id] = step_status
        run.status, run.held = status, False

    @rule(ref=runs, at=crash_at)
    def cancel(self, ref: tuple[str, str], at: int | None) -> None:
        crashed, result = self.attempt(at, False, lambda s: s.cancel_run(*ref))
        if not self.known(ref):
            assert crashed or isinstance(result, (RunNotFound, ThreadNotFound)), result
            return
        run = self.run_of(ref)
        if run.status in TERMINAL:
            assert crashed or isinstance(result, RunInTerminalState), result
            return
        at_once = run.status == "queued" or not run.held
        expected = "cancelled" if at_once else "cancelling"
        if crashed:
            found = self.stored_status(ref)
            assert found in {run.status, expected}, (run.status, expected, found)
            if at_once:
                self.adopt_replies(ref[0], ref[1], committed_cancel=found == "cancelled")
                self.adopt_steps(ref, "cancelled", committed=found == "cancelled")
            run.status = found
            run.held = run.held and found != "cancelled"
            return
        assert not isinstance(result, Exception), result
        assert result.status.value == expected, (result.status, expected)
        if at_once:
            self.end(ref, "cancelled")
        else:
            run.status = "cancelling"

    @rule(ref=runs, body=text, at=crash_at)
    def complete(self, ref: tuple[str, str], body: str, at: int | None) -> None:
        reply = new_message(ref[0], "assistant", body, run_id=ref[1])
        crashed, result = self.attempt(at, True, lambda s: s.complete_run(*ref, reply))
        if not self.known(ref):
            assert crashed or isinstance(result, (RunNotFound, ThreadNotFound)), result
            return
        run = self.run_of(ref)
        if run.status in TERMINAL:
            assert crashed or isinstance(result, RunInTerminalState), result
            return
        expected = "cancelled" if run.status == "cancelling" else "completed"
        mine = MMessage(reply.id, "assistant", body, run_id=ref[1])
        if crashed:
            found = self.stored_status(ref)
            assert found in {run.status, expected}, (run.status, expected, found)
            committed = found == expected
            stored_ids = [m.id for m in self.store.list_messages(ref[0])]
            if expected == "cancelled":
                self.adopt_replies(ref[0], ref[1], committed_cancel=committed)
            elif reply.id in stored_ids:  # appended; the run may not have completed
                assert stored_ids[-1] == reply.id
                self.model[ref[0]].messages.append(mine)
            else:
                assert not committed, "a completed run without its reply"
            self.adopt_steps(ref, expected, committed=committed)
            run.status = found
            run.held = run.held and not committed
            return
        assert not isinstance(result, Exception), result
        assert result.status.value == expected
        self.end(ref, expected, mine if expected == "completed" else None)

    @rule(ref=runs, at=crash_at)
    def add_step(self, ref: tuple[str, str], at: int | None) -> None:
        step = new_step(*ref)
        crashed, result = self.attempt(at, False, lambda s: s.append_step(*ref, step))
        if not self.known(ref):
            assert crashed or isinstance(result, (RunNotFound, ThreadNotFound)), result
            return
        run = self.run_of(ref)
        if crashed:
            try:
                self.store.get_step(*ref, step.id)
            except RunStepNotFound:
                return
        elif run.status in TERMINAL:
            assert isinstance(result, RunInTerminalState), result
            return
        else:
            assert not isinstance(result, Exception), result
        run.steps[step.id] = "in_progress"

    @precondition(lambda self: any(r.steps for t in self.model.values() for r in t.runs.values()))
    @rule(data=st.data(), status=st.sampled_from(STEP_STATUSES), at=crash_at)
    def step_status(self, data: st.DataObject, status: str, at: int | None) -> None:
        candidates = [
            (t.id, r.id, s) for t in self.model.values() for r in t.runs.values() for s in r.steps
        ]
        thread_id, run_id, step_id = data.draw(st.sampled_from(sorted(candidates)))
        crashed, result = self.attempt(
            at, False, lambda s: s.update_step_status(thread_id, run_id, step_id, status)
        )
        steps = self.model[thread_id].runs[run_id].steps
        if crashed:
            found = self.store.get_step(thread_id, run_id, step_id).status.value
            assert found in {steps[step_id], status}
            status = found
        else:
            assert not isinstance(result, Exception), result
        steps[step_id] = status

    @rule()
    def reopen(self) -> None:
        """A new process opens the same directory."""
        self.store = ThreadStore(self.dir)

    @rule(thread_id=consumes(threads))
    def forget(self, thread_id: str) -> None:
        """Stop using a thread (keeps the bundles from growing without end)."""

    # --------------------------------------------------------------- invariant

    @invariant()
    def store_matches_model(self) -> None:
        store = self.store
        assert store.list_thread_ids() == sorted(self.model)
        for thread in self.model.values():
            assert store.get_thread(thread.id).metadata == thread.metadata
            stored = [
                (m.id, m.role, m.text, m.status, m.run_id) for m in store.list_messages(thread.id)
            ]
            expected = [(m.id, m.role, m.text, m.status, m.run_id) for m in thread.messages]
            assert stored == expected, (stored, expected)
            runs = {run.id: run.status.value for run in store.list_runs(thread.id)}
            assert runs == {r.id: r.status for r in thread.runs.values()}
            active = store.active_run(thread.id)
            model_active = thread.active()
            assert (active.id if active else None) == (model_active.id if model_active else None)
            for run in thread.runs.values():
                steps = {s.id: s.status.value for s in store.list_steps(thread.id, run.id)}
                assert steps == run.steps, (steps, run.steps)
                assert [s.id for s in store.list_steps(thread.id, run.id)] == list(run.steps)
        original = integrity_module.JOURNAL_LAG_SECONDS
        integrity_module.JOURNAL_LAG_SECONDS = -1.0  # hold the journal to every record
        try:
            report = check_store(store, full=True)
        finally:
            integrity_module.JOURNAL_LAG_SECONDS = original
        # Runs put in a worker's state by update_run_status rather than the work queue's
        # own operations are stuck or unqueued (see the focused tests below); repair at
        # teardown must fix them.
        kinds = {p.kind for p in report.problems if p.kind not in UNMANAGED}
        if self.crashed_ever:
            assert kinds <= ALLOWED_AFTER_CRASH, report.problems
        else:
            assert not kinds, report.problems


StoreModel.TestCase.settings = settings(
    max_examples=scaled(60, 1500),
    stateful_step_count=scaled(40, 80),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStoreModel = StoreModel.TestCase


def test_a_run_set_back_to_queued_is_in_the_work_queue(tmp_path: Path) -> None:
    """The README: "any run written with status queued ... is picked up". A run that
    update_run_status sets back to queued (here after a claim) must be in the work
    queue, or no worker ever takes it. (Found by the model above, under make torture.)"""
    store = ThreadStore(tmp_path)
    thread = store.create_thread(new_thread())
    run = store.create_run(thread.id, new_run(thread.id))
    ref = RunRef(run_id=run.id, thread_id=thread.id)
    assert store.claim_run(ref, worker_id="w", lease_seconds=60, run_timeout=600) is not None
    store.update_run_status(thread.id, run.id, "queued")
    assert ref in store.queued_runs()


def test_zz_record_figures() -> None:
    """Runs after the machine (file order): what it tried, for docs/reliability.md."""
    assert FIGURES["examples"] > 0
    record_figures("store_model", **FIGURES)
