"""Runs executed by real `manage.py runworker` processes with the echo backend."""

from __future__ import annotations

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

from stores import Run, RunStatus, RunStepStatus, ThreadStore

FAST = {"THREADSITE_ECHO_DELAY": "0"}


def assert_completed_once(store: ThreadStore, run: Run, expected_text: str) -> None:
    """The run was executed exactly once and everything on disk agrees about it."""
    run = run_now(store, run)
    assert run.status is RunStatus.COMPLETED, (run.id, run.status, run.last_error)
    assert run.started_at is not None and run.completed_at is not None
    assert run.started_at <= run.completed_at
    assert run.last_error is None
    assert run.failed_at is None and run.cancelled_at is None and run.expired_at is None
    assert run.usage is not None and run.usage.completion_tokens > 0

    messages = assistant_messages(store, run)
    assert len(messages) == 1, f"run {run.id} left {len(messages)} assistant messages"
    message = messages[0]
    assert message.status == "completed"
    assert message.text == expected_text
    assert message.thread_id == run.thread_id
    assert message.assistant_id == run.assistant_id

    steps = steps_of(store, run)
    assert len(steps) == 1, f"run {run.id} has {len(steps)} steps: executed more than once?"
    step = steps[0]
    assert step.type == "message_creation"
    assert step.status is RunStepStatus.COMPLETED
    assert step.completed_at is not None
    assert step.message_id == message.id
    assert step.run_id == run.id and step.thread_id == run.thread_id

    # The thread is free again, and the draft goes (the store drops it just after it
    # publishes the final status, so allow it a moment).
    assert store.active_run(run.thread_id) is None
    wait_until(
        lambda: store.read_draft(run.thread_id, run.id) is None,
        5,
        message=f"the draft of the ended run {run.id} to go",
    )


def test_a_queued_run_is_executed_and_completes(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    run = queue_run(
        "What is the answer?",
        instructions="Answer briefly.",
        assistant_id="asst_tests",
    )
    assert run.status is RunStatus.QUEUED
    assert store.queued_count() == 1

    start_worker(FAST)

    done = wait_for_status(store, run, {"completed", "failed", "cancelled", "expired"}, 15)
    assert done.status is RunStatus.COMPLETED, done.last_error
    assert_completed_once(store, run, "Echo: What is the answer?")
    assert assistant_messages(store, run)[0].assistant_id == "asst_tests"
    wait_for_queue(store, queued=0)


def test_partial_text_is_visible_while_the_reply_streams(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    words = [f"w{i}" for i in range(20)]
    run = queue_run(" ".join(words))
    expected = "Echo: " + " ".join(words)
    start_worker({"THREADSITE_ECHO_DELAY": "0.1"})

    first = wait_for_draft(store, run)
    # While the reply streams, the run is in progress and its step is open.
    during = run_now(store, run)
    assert during.status is RunStatus.IN_PROGRESS
    assert during.started_at is not None
    steps = steps_of(store, run)
    assert [s.status for s in steps] == [RunStepStatus.IN_PROGRESS]
    assert assistant_messages(store, run) == []

    # The draft grows: every draft read is a prefix of the final reply, and it gets longer.
    seen = [first]

    def grown() -> bool:
        draft = store.read_draft(run.thread_id, run.id)
        if draft:
            seen.append(draft)
        return draft is not None and len(draft) > len(first)

    wait_until(grown, 10, message="the draft to grow")
    for draft in seen:
        assert expected.startswith(draft), draft

    wait_for_status(store, run, {"completed"}, 15)
    assert_completed_once(store, run, expected)


def test_three_workers_execute_a_hundred_runs_exactly_once(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    runs = [queue_run(f"message number {i}") for i in range(60)]
    assert store.queued_count() == 60

    workers = [start_worker(FAST, ready=False) for _ in range(3)]
    # More runs arrive while the workers are already taking them.
    runs += [queue_run(f"message number {i}") for i in range(60, 100)]

    def all_ended() -> bool:
        return all(run_now(store, run).status.is_terminal for run in runs)

    wait_until(all_ended, 45, interval=0.2, message="all 100 runs to end")
    for index, run in enumerate(runs):
        assert_completed_once(store, run, f"Echo: message number {index}")
    wait_for_queue(store, queued=0)

    for worker in workers:
        assert worker.poll() is None, f"a worker died:\n{worker.output()}"
        assert stop_worker(worker) == 0
        assert "Traceback" not in worker.output()


def test_heartbeats_and_queue_length_describe_the_workers(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    runs = [queue_run(" ".join(["slow"] * 60)) for _ in range(3)]
    assert store.queued_count() == 3
    assert store.heartbeats() == []

    before = time.time()
    worker = start_worker(
        {
            "THREADSITE_ECHO_DELAY": "0.2",
            "THREADSITE_WORKER_CONCURRENCY": "2",
            "THREADSITE_WORKER_SHUTDOWN_SECONDS": "0",
        }
    )
    (beat,) = store.heartbeats()
    assert beat.pid == worker.pid
    assert beat.backend == "echo"
    assert beat.concurrency == 2
    assert beat.seen_at >= before - 1

    # Two runs at a time: two are taken, one waits.
    wait_until(lambda: store.queued_count() == 1, 10, message="two runs to be claimed")
    assert sorted(run_now(store, run).status.value for run in runs) == [
        "in_progress",
        "in_progress",
        "queued",
    ]
    wait_until(
        lambda: [b.running for b in store.heartbeats()] == [2],
        10,
        message="a heartbeat saying two runs are running",
    )
    assert store.heartbeats()[0].seen_at > beat.seen_at

    # A worker that stops says goodbye: its heartbeat goes, its runs wait again.
    assert stop_worker(worker) == 0
    assert store.heartbeats() == []
    assert store.queued_count() == 3
    assert {run_now(store, run).status for run in runs} == {RunStatus.QUEUED}
