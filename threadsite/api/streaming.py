"""Server-sent events for a run, as the Assistants v2 API streams them.

The run worker (another process) executes the run; the stream follows it through the
store, reading the run, its steps and its draft reply every POLL_SECONDS, and emits the
v2 events in their order as it observes each state. A state passed between two reads is
still reported, in order (a run seen first when already completed was in progress
before), so every stream tells the whole story: thread.run.created, .queued,
.in_progress, thread.run.step.created, thread.message.created, thread.message.delta...,
thread.message.completed (or .incomplete), thread.run.step.completed (or how the step
ended), thread.run.completed (or how the run ended), then `done`.

A stream holds one server thread for as long as the run lasts, so each process serves at
most THREADSITE_API_MAX_STREAMS at once and the rest of its threads stay free for the
dashboard. A request for one more waits up to SLOT_WAIT_SECONDS for a stream to end,
then gets a 429 before anything is created, so the client's automatic retry is safe.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import StreamingHttpResponse

from stores import (
    MessageNotFound,
    Run,
    RunNotFound,
    RunStatus,
    RunStep,
    StoreError,
    Thread,
    ThreadNotFound,
    ThreadStore,
    text_content,
)

from . import shapes
from .errors import SERVER_ERROR, ApiError

log = logging.getLogger("threadsite.api")

POLL_SECONDS = 0.1
KEEPALIVE_SECONDS = 10.0
SLOT_WAIT_SECONDS = 2.0
# How long past the run's time limit a stream waits for the worker to expire the run.
GRACE_SECONDS = 30.0

Event = tuple[str, dict[str, Any]]

INCOMPLETE_REASONS = {
    "cancelled": "run_cancelled",
    "failed": "run_failed",
    "expired": "run_expired",
}


# ------------------------------------------------------------------- stream slots


class Slot:
    """One of the process's stream slots; release() is safe to call more than once."""

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._semaphore.release()


class _Slots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._size: int | None = None
        self._semaphore = threading.BoundedSemaphore(1)

    def take(self, timeout: float) -> Slot | None:
        size = int(settings.THREADSITE_API_MAX_STREAMS)
        with self._lock:
            if size != self._size:  # the setting changed (tests): slots held keep the old one
                self._semaphore = threading.BoundedSemaphore(size)
                self._size = size
            semaphore = self._semaphore
        if not semaphore.acquire(timeout=timeout):
            return None
        return Slot(semaphore)


_slots = _Slots()


def take_slot() -> Slot:
    """A stream slot of this process, or ApiError(429) if none frees up soon."""
    slot = _slots.take(SLOT_WAIT_SECONDS)
    if slot is None:
        raise ApiError(
            429,
            "This server is streaming as many runs as it allows at once. Try again shortly, "
            "or create the run without streaming and poll it.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": "2"},
        )
    return slot


# ------------------------------------------------------------------------ events


def encode(name: str, data: dict[str, Any]) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {body}\n\n".encode()


DONE = b"event: done\ndata: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def error_event(message: str) -> Event:
    error = {"message": message, "type": SERVER_ERROR, "param": None, "code": None}
    return "error", {"error": error}


@dataclass
class _Reply:
    """What a stream has told about one message_creation step and its message."""

    message_id: str | None
    announced: bool = False  # thread.message.created sent
    sent: str = ""  # text sent in deltas so far
    ended: bool = False


class RunWatcher:
    """Turns successive reads of a run into the v2 events that happened between them."""

    def __init__(self, store: ThreadStore, run: Run, *, run_timeout: float) -> None:
        self.store = store
        self.thread_id = run.thread_id
        self.run_id = run.id
        self.assistant_id = run.assistant_id
        self.run_timeout = run_timeout
        self.in_progress_sent = False
        self.cancelling_sent = False
        self.replies: dict[str, _Reply] = {}

    def poll(self) -> tuple[list[Event], bool]:
        """The events since the last poll, and whether the run has ended."""
        # Steps before the run: a step seen means the run was claimed. Once the run has
        # ended, its steps are read again: they were closed before the run's status.
        steps = self.store.list_steps(self.thread_id, self.run_id)
        run = self.store.get_run(self.thread_id, self.run_id)
        ended = run.status.is_terminal
        draft = None
        if ended:
            steps = self.store.list_steps(self.thread_id, self.run_id)
        else:
            draft = self.store.draft(self.thread_id, self.run_id)

        events: list[Event] = []
        if not self.in_progress_sent and (run.started_at is not None or steps):
            events.append(
                (
                    "thread.run.in_progress",
                    shapes.run_in_progress(run, run_timeout=self.run_timeout),
                )
            )
            self.in_progress_sent = True
        if run.status is RunStatus.CANCELLING and not self.cancelling_sent:
            events.append(("thread.run.cancelling", self._run(run)))
            self.cancelling_sent = True
        for step in steps:
            reply = self.replies.get(step.id)
            if reply is None:
                reply = self.replies[step.id] = _Reply(step.message_id)
                events.append(("thread.run.step.created", shapes.step_in_progress(step)))
            if reply.ended:
                continue
            if not step.status.is_terminal:
                if draft is not None and draft.message_id in (None, reply.message_id):
                    events += self._grow(reply, step, draft.text)
                continue
            events += self._finish(reply, step)
            events.append((f"thread.run.step.{step.status.value}", shapes.step(step)))
            reply.ended = True
        if ended:
            events.append((f"thread.run.{run.status.value}", self._run(run)))
        return events, ended

    def _run(self, run: Run) -> dict[str, Any]:
        return shapes.run(run, run_timeout=self.run_timeout)

    def _grow(self, reply: _Reply, step: RunStep, text: str) -> list[Event]:
        if reply.message_id is None or not text.startswith(reply.sent):
            return []
        events = []
        if not reply.announced and text:
            events.append(("thread.message.created", self._in_progress(reply, step)))
            reply.announced = True
        if len(text) > len(reply.sent):
            new = text[len(reply.sent) :]
            delta = shapes.message_delta(reply.message_id, new, first=not reply.sent)
            events.append(("thread.message.delta", delta))
            reply.sent = text
        return events

    def _finish(self, reply: _Reply, step: RunStep) -> list[Event]:
        """The reply's last events once its step has ended: the stored message's last
        text and the message itself, or, if none was kept, how what was sent ended."""
        if reply.message_id is None:
            return []
        try:
            message = self.store.get_message(self.thread_id, reply.message_id)
        except MessageNotFound:
            message = None
        if message is not None and message.run_id == self.run_id:
            events = self._grow(reply, step, message.text)
            if not reply.announced:
                events.append(("thread.message.created", self._in_progress(reply, step)))
            name = "completed" if message.status == "completed" else "incomplete"
            return [*events, (f"thread.message.{name}", shapes.message(message))]
        if not reply.announced:
            return []
        partial = self._in_progress(reply, step)
        partial.update(
            status="incomplete",
            incomplete_details={"reason": INCOMPLETE_REASONS.get(step.status.value, "run_failed")},
            incomplete_at=step.cancelled_at or step.failed_at or step.expired_at,
            content=text_content(reply.sent) if reply.sent else [],
        )
        return [("thread.message.incomplete", partial)]

    def _in_progress(self, reply: _Reply, step: RunStep) -> dict[str, Any]:
        assert reply.message_id is not None
        return shapes.message_in_progress(
            message_id=reply.message_id,
            thread_id=self.thread_id,
            run_id=self.run_id,
            assistant_id=self.assistant_id,
            created_at=step.created_at,
        )


class RunEvents:
    """A run's event stream as bytes for StreamingHttpResponse. The server calls close()
    when the response ends, however it ends (the run ended, the client went away), and
    that frees the stream slot."""

    def __init__(
        self,
        store: ThreadStore,
        run: Run,
        *,
        slot: Slot,
        run_timeout: float,
        thread: Thread | None = None,
        poll_seconds: float = POLL_SECONDS,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.store = store
        self.run = run
        self.thread = thread
        self.slot = slot
        self.run_timeout = run_timeout
        self.poll_seconds = poll_seconds
        self.keepalive_seconds = keepalive_seconds
        self._chunks = self._generate()

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        try:
            self._chunks.close()
        finally:
            self.slot.release()

    def _generate(self) -> Iterator[bytes]:
        last_sent = time.monotonic()
        for event in self._events():
            if event is None:
                if time.monotonic() - last_sent >= self.keepalive_seconds:
                    yield KEEPALIVE
                    last_sent = time.monotonic()
                continue
            yield encode(*event)
            last_sent = time.monotonic()
        yield DONE

    def _events(self) -> Iterator[Event | None]:
        """The events in order; None between polls, where a keep-alive may go."""
        run = self.run
        if self.thread is not None:
            yield "thread.created", shapes.thread(self.thread)
        yield "thread.run.created", shapes.run(run, run_timeout=self.run_timeout)
        yield "thread.run.queued", shapes.run(run, run_timeout=self.run_timeout)
        watcher = RunWatcher(self.store, run, run_timeout=self.run_timeout)
        remaining = run.created_at + self.run_timeout + GRACE_SECONDS - time.time()
        deadline = time.monotonic() + max(remaining, 0.0)
        while True:
            try:
                events, ended = watcher.poll()
            except (ThreadNotFound, RunNotFound):
                yield error_event("The run's thread was deleted while the run was streaming.")
                return
            except StoreError as error:
                log.error("streaming run %s: %s", run.id, error)
                yield error_event("The server could not read the run from its storage.")
                return
            yield from events
            if ended:
                return
            if time.monotonic() >= deadline:
                yield error_event(
                    f"Run {run.id} did not end within its time limit; it may still end "
                    "later: retrieve it to see how."
                )
                return
            yield None
            time.sleep(self.poll_seconds)


def open_stream(
    store: ThreadStore,
    start: Callable[[], tuple[Thread | None, Run]],
    *,
    run_timeout: float,
) -> StreamingHttpResponse:
    """Take a stream slot, then `start()` the run (making its thread, if it returns one)
    and answer with its events. Without a slot nothing is started (a 429)."""
    slot = take_slot()
    try:
        thread, run = start()
    except BaseException:
        slot.release()
        raise
    events = RunEvents(store, run, slot=slot, thread=thread, run_timeout=run_timeout)
    response = StreamingHttpResponse(events, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
