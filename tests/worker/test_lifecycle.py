"""Workers that die, workers that are asked to stop, and runs that take too long."""

from __future__ import annotations

import signal
import time

from worker_testkit import (
    QueueRun,
    StartWorker,
    assistant_messages,
    run_now,
    steps_of,
    stop_worker,
    wait_for_draft,
    wait_for_queue,
    wait_for_status,
    wait_until,
)

from stores import WORKER_LOST, RunStatus, RunStepStatus, ThreadStore

LONG_TEXT = " ".join(f"word{i}" for i in range(80))
SLOW = {"THREADSITE_ECHO_DELAY": "0.2", "THREADSITE_RUN_LEASE_SECONDS": "2"}
FAST = {"THREADSITE_ECHO_DELAY": "0", "THREADSITE_RUN_LEASE_SECONDS": "2"}
ENDED = {"completed", "failed", "cancelled", "expired", "incomplete"}

# A lost run is noticed once its lease (2 s) lapses, at the next reaping pass (every
# second): allow generously more on a busy machine.
LOST_WITHIN_SECONDS = 8


# ------------------------------------------------------------------------ leases


def test_a_lease_is_renewed_while_a_run_outlasts_it(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    """A run that outlasts the lease completes: its worker keeps renewing the lease, so
    the other worker, reaping lost runs all along, leaves it alone."""
    text = " ".join(f"w{i}" for i in range(16))  # 3 s at 0.2 s a word; the lease is 2 s
    run = queue_run(text)
    start_worker(SLOW)
    wait_for_draft(store, run)
    start_worker(FAST)

    done = wait_for_status(store, run, ENDED, 15)
    assert done.status is RunStatus.COMPLETED, done.last_error
    assert done.completed_at is not None and done.started_at is not None
    assert done.completed_at - done.started_at >= 2
    assert [m.text for m in assistant_messages(store, run)] == ["Echo: " + text]
    assert len(steps_of(store, run)) == 1


# ------------------------------------------------------------------ worker lost


def test_a_run_whose_worker_is_killed_fails_as_worker_lost(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    before = queue_run("done before the crash")
    doomed = queue_run(LONG_TEXT)
    victim = start_worker({**SLOW, "THREADSITE_WORKER_CONCURRENCY": "2"})
    wait_for_status(store, before, {"completed"}, 15)
    wait_for_draft(store, doomed)
    survivor = start_worker(FAST)

    victim.kill()
    victim.wait(timeout=10)
    killed_at = time.monotonic()
    lost = wait_for_status(store, doomed, ENDED, LOST_WITHIN_SECONDS)
    assert lost.status is RunStatus.FAILED, lost.status
    took = time.monotonic() - killed_at
    assert took < LOST_WITHIN_SECONDS

    assert lost.last_error == WORKER_LOST
    assert lost.last_error.code == "server_error"
    assert "worker" in lost.last_error.message.lower()
    assert lost.failed_at is not None and lost.completed_at is None
    (step,) = steps_of(store, doomed)
    assert step.status is RunStepStatus.FAILED
    assert all(m.status != "completed" for m in assistant_messages(store, doomed))
    assert store.active_run(doomed.thread_id) is None
    wait_for_queue(store, queued=0)

    # Other runs are unaffected: the one finished before the crash stays completed, and
    # new runs are executed by the surviving worker.
    assert run_now(store, before).status is RunStatus.COMPLETED
    assert len(assistant_messages(store, before)) == 1
    after = {f"after the crash {i}": queue_run(f"after the crash {i}") for i in range(3)}
    for text, run in after.items():
        wait_for_status(store, run, {"completed"}, 15)
        assert [m.text for m in assistant_messages(store, run)] == [f"Echo: {text}"]
    assert survivor.poll() is None


def test_a_restarted_worker_ends_the_run_its_killed_self_left(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    doomed = queue_run(LONG_TEXT)
    first = start_worker(SLOW)
    wait_for_draft(store, doomed)
    first.kill()
    first.wait(timeout=10)

    start_worker(SLOW)  # the same worker, restarted
    lost = wait_for_status(store, doomed, ENDED, LOST_WITHIN_SECONDS)
    assert lost.status is RunStatus.FAILED
    assert lost.last_error == WORKER_LOST


def test_a_cancel_of_a_run_whose_worker_died_completes_on_its_own(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    run = queue_run(LONG_TEXT)
    victim = start_worker(SLOW)
    wait_for_draft(store, run)
    victim.kill()
    victim.wait(timeout=10)

    # The dead worker's lease has not lapsed yet: the cancel is pending...
    told = store.cancel_run(run.thread_id, run.id)
    assert told.status in {RunStatus.CANCELLING, RunStatus.CANCELLED}
    start_worker(FAST)
    # ...and ends `cancelled` (not failed) once nobody holds the run.
    ended = wait_for_status(store, run, ENDED, LOST_WITHIN_SECONDS)
    assert ended.status is RunStatus.CANCELLED
    (step,) = steps_of(store, run)
    assert step.status is RunStepStatus.CANCELLED
    assert all(m.status != "completed" for m in assistant_messages(store, run))


# -------------------------------------------------------------------- shutdown


def test_sigterm_with_a_short_grace_hands_the_run_back_to_the_queue(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    run = queue_run(LONG_TEXT)
    leaving = start_worker({**SLOW, "THREADSITE_WORKER_SHUTDOWN_SECONDS": "0.5"})
    wait_for_draft(store, run)

    asked = time.monotonic()
    assert stop_worker(leaving, signal.SIGTERM) == 0
    assert time.monotonic() - asked < 10, "the worker ignored its short grace period"
    assert "Traceback" not in leaving.output()

    # The run waits again, as if never started; its interrupted step says why.
    waiting = run_now(store, run)
    assert waiting.status is RunStatus.QUEUED
    assert waiting.started_at is None
    assert store.queued_count() == 1
    assert store.running_runs() == []
    assert store.heartbeats() == []
    assert assistant_messages(store, run) == []
    (interrupted,) = steps_of(store, run)
    assert interrupted.status is RunStepStatus.FAILED
    assert interrupted.last_error is not None
    assert "shut down" in interrupted.last_error.message

    # Another worker takes it and completes it, from the start.
    start_worker({"THREADSITE_ECHO_DELAY": "0"})
    done = wait_for_status(store, run, ENDED, 15)
    assert done.status is RunStatus.COMPLETED, done.last_error
    messages = assistant_messages(store, run)
    assert [(m.status, m.text) for m in messages] == [("completed", "Echo: " + LONG_TEXT)]
    steps = steps_of(store, run)
    assert [s.status for s in steps] == [RunStepStatus.FAILED, RunStepStatus.COMPLETED]
    assert steps[1].message_id == messages[0].id


def test_sigterm_with_a_long_grace_finishes_the_run_before_exiting(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    text = " ".join(f"w{i}" for i in range(12))  # about 1.2 s of reply
    run = queue_run(text)
    waiting = queue_run("not started: the worker is leaving")
    worker = start_worker(
        {
            "THREADSITE_ECHO_DELAY": "0.1",
            "THREADSITE_WORKER_CONCURRENCY": "1",
            "THREADSITE_WORKER_SHUTDOWN_SECONDS": "30",
        }
    )
    wait_for_draft(store, run)
    assert run_now(store, waiting).status is RunStatus.QUEUED

    worker.send_signal(signal.SIGTERM)
    # The worker stays until its run is done...
    assert stop_worker(worker, timeout=20) == 0
    # ...so by the time it has exited, the run has completed.
    done = run_now(store, run)
    assert done.status is RunStatus.COMPLETED, (done.status, done.last_error)
    assert [m.text for m in assistant_messages(store, run)] == ["Echo: " + text]
    # A leaving worker takes no new work.
    assert run_now(store, waiting).status is RunStatus.QUEUED
    assert store.queued_count() == 1
    assert store.heartbeats() == []


# --------------------------------------------------------------------- timeouts


def test_a_run_that_waited_past_the_time_limit_expires_unstarted(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    stale = queue_run("too late")
    # created_at has whole-second resolution: wait until a 1 s limit has surely passed.
    wait_until(lambda: time.time() >= stale.created_at + 2, 5, interval=0.05)

    start_worker({"THREADSITE_RUN_TIMEOUT_SECONDS": "1", "THREADSITE_ECHO_DELAY": "0"})
    expired = wait_for_status(store, stale, ENDED, 10)
    assert expired.status is RunStatus.EXPIRED
    assert expired.expired_at is not None
    assert expired.started_at is None
    assert steps_of(store, stale) == []
    assert assistant_messages(store, stale) == []
    wait_for_queue(store, queued=0)


def test_a_run_that_streams_past_the_time_limit_expires(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    start_worker(
        {"THREADSITE_RUN_TIMEOUT_SECONDS": "3", "THREADSITE_ECHO_DELAY": "0.2"},
    )
    run = queue_run(LONG_TEXT)  # 16 s of reply against a 3 s limit
    wait_for_draft(store, run)
    expired = wait_for_status(store, run, ENDED, 8)
    assert expired.status is RunStatus.EXPIRED
    assert expired.expired_at is not None
    assert expired.expired_at - expired.created_at <= 5
    (step,) = steps_of(store, run)
    assert step.status is RunStepStatus.EXPIRED
    assert store.active_run(run.thread_id) is None
    # The text streamed before the limit is kept as an incomplete message, which must
    # say the run expired (v2's incomplete_details.reason), not that it was cancelled.
    (partial,) = assistant_messages(store, run)
    assert partial.status == "incomplete"
    assert ("Echo: " + LONG_TEXT).startswith(partial.text)
    assert partial.to_dict()["incomplete_details"] == {"reason": "run_expired"}
