"""The events a run's stream emits, with the store driven by hand in place of a worker,
so that every state a run can be seen in (and every state it can skip between two
looks) is covered."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from stores import (
    RunError,
    RunRef,
    RunStatus,
    ThreadStore,
    new_id,
    new_message,
    new_run,
    new_step,
    new_thread,
)
from threadsite.api import streaming

TIMEOUT = 600.0


@pytest.fixture
def store(thread_store: ThreadStore) -> ThreadStore:
    return thread_store


@pytest.fixture
def run(store: ThreadStore):
    thread = store.create_thread(new_thread())
    store.append_message(thread.id, new_message(thread.id, "user", "Hello"))
    return store.create_run(thread.id, new_run(thread.id, assistant_id="asst_x"))


def claim(store: ThreadStore, run) -> None:
    ref = RunRef(run_id=run.id, thread_id=run.thread_id)
    assert store.claim_run(ref, worker_id="w1", lease_seconds=30, run_timeout=TIMEOUT)


def start_step(store: ThreadStore, run) -> str:
    message_id = new_id("msg")
    step = new_step(run.thread_id, run.id, assistant_id="asst_x", message_id=message_id)
    store.append_step(run.thread_id, run.id, step)
    return message_id


def reply(run, message_id: str, text: str):
    return new_message(
        run.thread_id,
        "assistant",
        text,
        message_id=message_id,
        run_id=run.id,
        assistant_id="asst_x",
    )


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in events]


def test_a_run_followed_state_by_state(store: ThreadStore, run):
    watcher = streaming.RunWatcher(store, run, run_timeout=TIMEOUT)
    assert watcher.poll() == ([], False)  # still queued

    claim(store, run)
    events, _ = watcher.poll()
    assert names(events) == ["thread.run.in_progress"]
    assert events[0][1]["status"] == "in_progress"

    message_id = start_step(store, run)
    events, _ = watcher.poll()
    assert names(events) == ["thread.run.step.created"]
    assert events[0][1]["step_details"]["message_creation"]["message_id"] == message_id

    store.write_draft(run.thread_id, run.id, "Hello", message_id=message_id)
    events, _ = watcher.poll()
    assert names(events) == ["thread.message.created", "thread.message.delta"]
    created, first = events[0][1], events[1][1]
    assert (created["id"], created["status"], created["content"]) == (message_id, "in_progress", [])
    assert first["delta"]["content"] == [
        {"index": 0, "type": "text", "text": {"value": "Hello", "annotations": []}}
    ]

    store.write_draft(run.thread_id, run.id, "Hello world", message_id=message_id)
    events, _ = watcher.poll()
    assert [e[1]["delta"]["content"][0]["text"] for e in events] == [{"value": " world"}]
    assert watcher.poll() == ([], False)  # nothing new, nothing sent

    store.complete_run(run.thread_id, run.id, reply(run, message_id, "Hello world!"))
    events, ended = watcher.poll()
    assert ended
    assert names(events) == [
        "thread.message.delta",
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
    ]
    assert events[0][1]["delta"]["content"][0]["text"] == {"value": "!"}
    assert events[1][1]["content"][0]["text"]["value"] == "Hello world!"
    assert events[3][1]["status"] == "completed"


def test_a_run_first_seen_finished_still_tells_every_step(store: ThreadStore, run):
    watcher = streaming.RunWatcher(store, run, run_timeout=TIMEOUT)
    claim(store, run)
    message_id = start_step(store, run)
    store.complete_run(run.thread_id, run.id, reply(run, message_id, "Echo: Hello"))

    events, ended = watcher.poll()

    assert ended
    assert names(events) == [
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.message.created",
        "thread.message.delta",
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
    ]
    in_progress, step_created = events[0][1], events[1][1]
    assert (in_progress["status"], in_progress["completed_at"]) == ("in_progress", None)
    assert (step_created["status"], step_created["completed_at"]) == ("in_progress", None)
    assert events[3][1]["delta"]["content"][0]["text"]["value"] == "Echo: Hello"


def test_a_run_cancelled_while_queued_never_was_in_progress(store: ThreadStore, run):
    watcher = streaming.RunWatcher(store, run, run_timeout=TIMEOUT)
    store.cancel_run(run.thread_id, run.id)
    events, ended = watcher.poll()
    assert ended and names(events) == ["thread.run.cancelled"]


def test_a_reply_cut_short_ends_incomplete(store: ThreadStore, run):
    watcher = streaming.RunWatcher(store, run, run_timeout=TIMEOUT)
    claim(store, run)
    message_id = start_step(store, run)
    store.write_draft(run.thread_id, run.id, "Half a", message_id=message_id)
    watcher.poll()

    assert store.cancel_run(run.thread_id, run.id).status is RunStatus.CANCELLING
    events, _ = watcher.poll()
    assert names(events) == ["thread.run.cancelling"]

    partial = reply(run, message_id, "Half a sent")
    store.finish_run(run.thread_id, run.id, RunStatus.CANCELLED, partial=partial)
    events, ended = watcher.poll()
    assert ended
    assert names(events) == [
        "thread.message.delta",
        "thread.message.incomplete",
        "thread.run.step.cancelled",
        "thread.run.cancelled",
    ]
    assert events[1][1]["status"] == "incomplete"
    assert events[1][1]["content"][0]["text"]["value"] == "Half a sent"


def test_text_sent_but_never_kept_is_reported_incomplete(store: ThreadStore, run):
    watcher = streaming.RunWatcher(store, run, run_timeout=TIMEOUT)
    claim(store, run)
    message_id = start_step(store, run)
    store.write_draft(run.thread_id, run.id, "Lost", message_id=message_id)
    watcher.poll()
    store.finish_run(run.thread_id, run.id, RunStatus.EXPIRED)  # no partial message kept

    events, ended = watcher.poll()
    assert names(events) == [
        "thread.message.incomplete",
        "thread.run.step.expired",
        "thread.run.expired",
    ]
    incomplete = events[0][1]
    assert incomplete["incomplete_details"] == {"reason": "run_expired"}
    assert incomplete["content"][0]["text"]["value"] == "Lost"


def test_a_run_that_fails_before_writing_has_no_message_events(store: ThreadStore, run):
    watcher = streaming.RunWatcher(store, run, run_timeout=TIMEOUT)
    claim(store, run)
    start_step(store, run)
    store.finish_run(run.thread_id, run.id, RunStatus.FAILED, RunError("server_error", "boom"))
    events, ended = watcher.poll()
    assert names(events) == [
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.failed",
        "thread.run.failed",
    ]
    assert events[-1][1]["last_error"] == {"code": "server_error", "message": "boom"}


# ------------------------------------------------------------- the byte stream


def read_all(events: streaming.RunEvents) -> bytes:
    try:
        return b"".join(events)
    finally:
        events.close()


def parse(body: bytes) -> list[tuple[str, Any]]:
    """(event, data) of each SSE event; keep-alive comments are skipped."""
    found = []
    for block in body.decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        data = fields["data"]
        found.append((fields["event"], data if data == "[DONE]" else json.loads(data)))
    return found


def test_the_stream_keeps_alive_while_waiting_and_ends_with_done(store: ThreadStore, run):
    slot = streaming.take_slot()
    events = streaming.RunEvents(
        store, run, slot=slot, run_timeout=TIMEOUT, poll_seconds=0.01, keepalive_seconds=0.05
    )
    threading.Timer(0.3, store.cancel_run, args=(run.thread_id, run.id)).start()

    body = read_all(events)

    assert streaming.KEEPALIVE in body
    assert body.endswith(b"event: done\ndata: [DONE]\n\n")
    assert [name for name, _ in parse(body)] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.cancelled",
        "done",
    ]


def test_the_stream_gives_up_after_the_runs_time_limit(store: ThreadStore, run, monkeypatch):
    monkeypatch.setattr(streaming, "GRACE_SECONDS", -1.0)
    events = streaming.RunEvents(
        store, run, slot=streaming.take_slot(), run_timeout=0.0, poll_seconds=0.01
    )
    parsed = parse(read_all(events))
    assert [name for name, _ in parsed][-2:] == ["error", "done"]
    assert "time limit" in parsed[-2][1]["error"]["message"]


def test_a_thread_deleted_mid_stream_ends_it_with_an_error(store: ThreadStore, run):
    events = streaming.RunEvents(
        store, run, slot=streaming.take_slot(), run_timeout=TIMEOUT, poll_seconds=0.01
    )
    threading.Timer(0.1, store.delete_thread, args=(run.thread_id,)).start()
    parsed = parse(read_all(events))
    assert [name for name, _ in parsed][-2:] == ["error", "done"]


def test_closing_a_stream_early_frees_its_slot(store: ThreadStore, run, settings):
    settings.THREADSITE_API_MAX_STREAMS = 1
    events = streaming.RunEvents(store, run, slot=streaming.take_slot(), run_timeout=TIMEOUT)
    next(iter(events))
    events.close()  # the client went away
    streaming.take_slot().release()
