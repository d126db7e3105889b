"""The openai backend against a fake OpenAI-compatible server on 127.0.0.1, over HTTP.

One worker process serves the whole module (starting one costs a second of imports):
each test queues its own run on its own thread, naming the fake server's behaviour by
the run's model, and checks only that run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_model_server import (
    ERROR_500_MESSAGE,
    OK_TEXT,
    OK_USAGE,
    STREAM_ERROR_MESSAGE,
    FakeModelServer,
)
from worker_testkit import (
    API_KEY,
    WorkerProcess,
    assert_secret_absent,
    assistant_messages,
    kill_workers,
    launch_worker,
    steps_of,
    stop_worker,
    wait_for_draft,
    wait_for_heartbeat,
    wait_for_status,
    wait_until,
)

from stores import (
    Run,
    RunStatus,
    RunStepStatus,
    RunUsage,
    ThreadStore,
    new_message,
    new_run,
    new_thread,
)

ENDED = {"completed", "failed", "cancelled", "expired", "incomplete"}
INSTRUCTIONS = "You are a terse test assistant."
DEFAULT_MODEL = "fake-ok"  # THREADSITE_MODEL: used when a run names no model


@dataclass
class Rig:
    server: FakeModelServer
    store: ThreadStore
    data_dir: Path
    worker: WorkerProcess

    def queue(self, text: str, *, model: str = "echo") -> Run:
        """A new thread with one user message and a run with INSTRUCTIONS."""
        thread = self.store.create_thread(new_thread())
        self.store.append_message(thread.id, new_message(thread.id, "user", text))
        run = new_run(thread.id, model=model, instructions=INSTRUCTIONS, assistant_id="asst_fake")
        return self.store.create_run(thread.id, run)

    def assert_no_secret(self) -> None:
        """The API key is in no file under the data dir and not in the worker's output."""
        assert_secret_absent(API_KEY, self.data_dir, [self.worker])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    server = FakeModelServer(api_key=API_KEY)
    server.start()
    base = tmp_path_factory.mktemp("openai")
    data_dir = base / "data"
    data_dir.mkdir()
    store = ThreadStore(data_dir / "threads")
    env = {
        "THREADSITE_BACKEND": "openai",
        "THREADSITE_MODEL_BASE_URL": server.base_url,
        "THREADSITE_MODEL_API_KEY": API_KEY,
        "THREADSITE_MODEL": DEFAULT_MODEL,
        "THREADSITE_MODEL_TIMEOUT_SECONDS": "1",
        "THREADSITE_WORKER_CONCURRENCY": "8",
    }
    worker = launch_worker(data_dir, base, "openai-worker", env)
    try:
        wait_for_heartbeat(store, worker)
        rig = Rig(server=server, store=store, data_dir=data_dir, worker=worker)
        yield rig
        # After a clean shutdown too, the key was never written anywhere.
        assert stop_worker(worker) == 0, worker.output()
        rig.assert_no_secret()
    finally:
        kill_workers([worker])
        server.stop()


def assert_request_was_proper(rig: Rig, model: str, user_text: str) -> None:
    """The worker sent one streaming request with the key, the run's instructions as the
    system message first, and the thread's user message."""
    (request,) = rig.server.received(model)
    assert request.path == "/v1/chat/completions"
    assert request.authorization == f"Bearer {API_KEY}"
    assert request.body.get("stream") is True
    assert request.messages[0] == {"role": "system", "content": INSTRUCTIONS}
    assert request.messages[-1] == {"role": "user", "content": user_text}
    assert [m["role"] for m in request.messages] == ["system", "user"]


def test_a_streamed_reply_completes_the_run_with_its_text_and_usage(rig: Rig) -> None:
    # The run names no model of its own ("echo" is the dashboard's placeholder), so the
    # worker asks for THREADSITE_MODEL.
    run = rig.queue("Say hello.")
    done = wait_for_status(rig.store, run, ENDED, 15)
    assert done.status is RunStatus.COMPLETED, done.last_error
    assert done.usage == RunUsage(
        prompt_tokens=OK_USAGE["prompt_tokens"], completion_tokens=OK_USAGE["completion_tokens"]
    )
    assert done.usage.to_dict()["total_tokens"] == OK_USAGE["total_tokens"]
    assert done.started_at is not None and done.completed_at is not None
    assert done.last_error is None

    (message,) = assistant_messages(rig.store, run)
    assert message.text == OK_TEXT
    assert message.status == "completed"
    assert message.run_id == run.id
    assert message.assistant_id == "asst_fake"
    (step,) = steps_of(rig.store, run)
    assert step.status is RunStepStatus.COMPLETED
    assert step.message_id == message.id

    request = next(r for r in rig.server.received(DEFAULT_MODEL) if "Say hello." in str(r.body))
    assert request.authorization == f"Bearer {API_KEY}"
    assert request.messages == [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": "Say hello."},
    ]
    rig.assert_no_secret()


def test_the_runs_own_model_overrides_the_default(rig: Rig) -> None:
    run = rig.queue("Hi.", model="fake-ok-override")
    done = wait_for_status(rig.store, run, ENDED, 15)
    assert done.status is RunStatus.COMPLETED, done.last_error
    assert_request_was_proper(rig, "fake-ok-override", "Hi.")
    assert [m.text for m in assistant_messages(rig.store, run)] == [OK_TEXT]


# model -> (last_error.code, what the message must say, case-insensitively)
FAILURES = {
    "fake-429": ("rate_limit_exceeded", ["429", "rate limit"]),
    "fake-500": ("server_error", ["500", ERROR_500_MESSAGE]),
    "fake-hang": ("server_error", ["did not answer", "THREADSITE_MODEL_TIMEOUT_SECONDS"]),
    "fake-malformed": ("server_error", ["could not be understood"]),
    "fake-stream-error": ("server_error", [STREAM_ERROR_MESSAGE]),
    "fake-empty": ("server_error", ["without any text"]),
    "fake-401-leaky": ("server_error", ["401", "THREADSITE_MODEL_API_KEY"]),
    "fake-500-leaky": ("server_error", ["500", "Gateway failure"]),
    "no-such-model": ("server_error", ["404", "model"]),
}


@pytest.mark.parametrize("model", list(FAILURES))
def test_a_model_failure_fails_the_run_with_an_actionable_error(rig: Rig, model: str) -> None:
    code, words = FAILURES[model]
    run = rig.queue("Answer me.", model=model)

    failed = wait_for_status(rig.store, run, ENDED, 15)
    assert failed.status is RunStatus.FAILED, (failed.status, failed.last_error)
    assert failed.last_error is not None
    assert failed.last_error.code == code
    message = failed.last_error.message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    assert API_KEY not in message
    assert failed.failed_at is not None and failed.completed_at is None
    (step,) = steps_of(rig.store, run)
    assert step.status is RunStepStatus.FAILED
    for message in assistant_messages(rig.store, run):
        # Text streamed before the failure may be kept, but only as an incomplete
        # message that says why it is incomplete.
        assert message.status == "incomplete"
        assert message.to_dict()["incomplete_details"] == {"reason": "run_failed"}, (
            "the partial message of a failed run claims another reason"
        )
    # One request, no retries: a failed run says so, and the operator decides.
    assert_request_was_proper(rig, model, "Answer me.")
    # The worker survives a failing model and goes on taking runs.
    assert rig.worker.poll() is None
    assert rig.store.active_run(run.thread_id) is None
    rig.assert_no_secret()


def test_cancel_mid_stream_stops_the_model_call(rig: Rig) -> None:
    run = rig.queue("Talk slowly.", model="fake-slow")

    draft = wait_for_draft(rig.store, run)
    asked = time.monotonic()
    told = rig.store.cancel_run(run.thread_id, run.id)
    assert told.status in {RunStatus.CANCELLING, RunStatus.CANCELLED}
    ended = wait_for_status(rig.store, run, ENDED, 2.5)
    assert ended.status is RunStatus.CANCELLED
    assert time.monotonic() - asked < 2

    (step,) = steps_of(rig.store, run)
    assert step.status is RunStepStatus.CANCELLED
    messages = assistant_messages(rig.store, run)
    assert [m.status for m in messages] == ["incomplete"]
    assert step.message_id == messages[0].id
    assert messages[0].text.startswith(draft)
    assert messages[0].text.startswith("word0 ")

    # The model call itself stops: the server sees the worker hang up.
    (request,) = rig.server.received("fake-slow")
    wait_until(
        lambda: request.outcome == "client-closed",
        3,
        message="the model server to see the worker hang up",
    )
    assert request.closed_at is not None and request.closed_at - asked < 3
    assert_request_was_proper(rig, "fake-slow", "Talk slowly.")
    # Nothing more arrives for the cancelled run.
    assert [m.status for m in assistant_messages(rig.store, run)] == ["incomplete"]
    rig.assert_no_secret()


def test_the_model_sees_the_whole_conversation_in_order(rig: Rig) -> None:
    thread = rig.store.create_thread(new_thread())
    history = [("user", "First question?"), ("assistant", "First answer."), ("user", "Second?")]
    for role, text in history:
        rig.store.append_message(thread.id, new_message(thread.id, role, text))
    run = rig.store.create_run(
        thread.id, new_run(thread.id, model="fake-ok-history", instructions=INSTRUCTIONS)
    )
    done = wait_for_status(rig.store, run, ENDED, 15)
    assert done.status is RunStatus.COMPLETED, done.last_error
    (request,) = rig.server.received("fake-ok-history")
    assert request.messages == [{"role": "system", "content": INSTRUCTIONS}] + [
        {"role": role, "content": text} for role, text in history
    ]


def test_a_failed_step_names_no_message_that_does_not_exist(rig: Rig) -> None:
    """A message_creation step names the message it created (v2). A run that failed
    before writing any text created none, so its step must not name one: a reader
    following the step's message_id would find nothing."""
    run = rig.queue("Rate limit me.", model="fake-429-again")
    assert wait_for_status(rig.store, run, ENDED, 15).status is RunStatus.FAILED
    assert assistant_messages(rig.store, run) == []
    (step,) = steps_of(rig.store, run)
    existing = {m.id for m in rig.store.list_messages(run.thread_id)}
    assert step.message_id is None or step.message_id in existing, (
        f"the failed step names message {step.message_id}, which was never written"
    )
