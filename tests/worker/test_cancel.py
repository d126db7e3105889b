"""Cancelling runs that wait, that stream, and that are about to complete."""

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
    wait_for_status,
    wait_until,
)

from stores import (
    Run,
    RunInTerminalState,
    RunStatus,
    RunStepStatus,
    ThreadStore,
    new_message,
)

SLOW_ECHO = {"THREADSITE_ECHO_DELAY": "0.2"}
LONG_TEXT = " ".join(f"word{i}" for i in range(80))  # 16 s of slow echo


def assert_cancelled_keeping_partial(store: ThreadStore, run: Run, full_reply: str) -> str:
    """The run ended cancelled, its step cancelled, and the text produced before the
    cancel is kept as one `incomplete` assistant message; returns that text."""
    run = run_now(store, run)
    assert run.status is RunStatus.CANCELLED
    assert run.cancelled_at is not None
    assert run.completed_at is None and run.failed_at is None
    steps = steps_of(store, run)
    assert len(steps) == 1
    assert steps[0].status is RunStepStatus.CANCELLED
    assert steps[0].cancelled_at is not None

    messages = assistant_messages(store, run)
    assert [m.status for m in messages] == ["incomplete"], "want one incomplete message only"
    partial = messages[0]
    assert partial.text, "the partial text was lost"
    assert full_reply.startswith(partial.text)
    assert len(partial.text) < len(full_reply), "the reply was not cut short"
    assert partial.to_dict()["incomplete_details"] == {"reason": "run_cancelled"}
    assert steps[0].message_id == partial.id
    return partial.text


def test_cancelling_a_queued_run_cancels_it_before_any_worker_sees_it(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    cancelled = queue_run("never answer this")
    told = store.cancel_run(cancelled.thread_id, cancelled.id)
    assert told.status is RunStatus.CANCELLED
    assert store.queued_count() == 0
    other = queue_run("answer this one")

    start_worker({"THREADSITE_ECHO_DELAY": "0"})
    wait_for_status(store, other, {"completed"}, 15)

    # The worker took the run queued after it, so it has seen the queue: the cancelled
    # run stays cancelled, untouched.
    final = run_now(store, cancelled)
    assert final.status is RunStatus.CANCELLED
    assert final.started_at is None
    assert steps_of(store, cancelled) == []
    assert assistant_messages(store, cancelled) == []
    # Cancelling it again changes nothing and says so.
    try:
        store.cancel_run(cancelled.thread_id, cancelled.id)
    except RunInTerminalState as error:
        assert error.run.status is RunStatus.CANCELLED
    else:
        raise AssertionError("cancelling a cancelled run did not say it had ended")


def test_cancel_mid_stream_stops_the_run_and_keeps_the_partial_text(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    run = queue_run(LONG_TEXT)
    worker = start_worker(SLOW_ECHO)

    draft = wait_for_draft(store, run)
    asked = time.monotonic()
    told = store.cancel_run(run.thread_id, run.id)
    assert told.status in {RunStatus.CANCELLING, RunStatus.CANCELLED}

    wait_for_status(store, run, {"cancelled", "completed", "failed", "expired"}, 2.5)
    took = time.monotonic() - asked
    assert took < 2, f"the cancel took {took:.1f} s"
    partial = assert_cancelled_keeping_partial(store, run, "Echo: " + LONG_TEXT)
    assert partial.startswith(draft)

    # The thread is free again: a new message can be posted.
    assert store.active_run(run.thread_id) is None
    store.append_message(run.thread_id, new_message(run.thread_id, "user", "next"))

    # After the worker has gone, nothing more was added: still no completed message.
    assert stop_worker(worker) == 0
    assert [m.status for m in assistant_messages(store, run)] == ["incomplete"]
    assert run_now(store, run).status is RunStatus.CANCELLED


def test_a_cancel_racing_completion_has_exactly_one_outcome(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    """Replies that take ~0.3 s, each cancelled at its own moment, from as soon as it is
    seen running to well after its end: whichever wins, disk agrees with what the caller
    was told, and a cancelled run never has a completed message."""
    text = "one two three four five six"  # "Echo: " + 6 words: 6 gaps of 0.05 s
    runs = [queue_run(text) for _ in range(16)]
    # The first is cancelled at once; the rest around the moment the reply ends.
    offsets = {run.id: 0.2 + index * 0.016 if index else 0.0 for index, run in enumerate(runs)}
    start_worker({"THREADSITE_ECHO_DELAY": "0.05", "THREADSITE_WORKER_CONCURRENCY": "8"})

    seen_running: dict[str, float] = {}
    told: dict[str, str] = {}

    def cancel_when_due() -> bool:
        # Wall-clock offsets are the point here: each cancel lands at a different moment
        # of its run's life.
        for run in runs:
            if run.id in told:
                continue
            now = time.monotonic()
            if run.id not in seen_running:
                if run_now(store, run).status is RunStatus.QUEUED:
                    continue
                seen_running[run.id] = now
            if now >= seen_running[run.id] + offsets[run.id]:
                try:
                    told[run.id] = store.cancel_run(run.thread_id, run.id).status.value
                except RunInTerminalState as error:
                    told[run.id] = "already " + error.run.status.value
        return len(told) == len(runs)

    wait_until(cancel_when_due, 30, interval=0.005, message="every run to get its cancel")
    for run in runs:
        wait_for_status(store, run, {"completed", "cancelled", "failed", "expired"}, 5)

    outcomes = []
    for run in runs:
        final = run_now(store, run)
        said = told[run.id]
        messages = assistant_messages(store, run)
        steps = steps_of(store, run)
        assert len(steps) == 1, (run.id, said, steps)
        if said == "already completed":
            assert final.status is RunStatus.COMPLETED, (run.id, said, final.status)
        else:
            # cancel_run said cancelling or cancelled: the cancel must stick.
            assert said in {"cancelling", "cancelled"}, said
            assert final.status is RunStatus.CANCELLED, (run.id, said, final.status)
        if final.status is RunStatus.COMPLETED:
            assert [m.status for m in messages] == ["completed"]
            assert messages[0].text == "Echo: " + text
            assert steps[0].status is RunStepStatus.COMPLETED
            assert steps[0].message_id == messages[0].id
            assert final.cancelled_at is None
        else:
            assert all(m.status != "completed" for m in messages), (run.id, messages)
            assert len(messages) <= 1
            assert steps[0].status is RunStepStatus.CANCELLED
            assert final.completed_at is None
        outcomes.append(final.status.value)
    # A cancel sent as soon as the run is seen running lands long before its reply ends.
    assert outcomes[0] == "cancelled"
