"""The official `openai` package against Threadsite under real gunicorn, with a real run
worker executing runs with the echo model: code written for the Assistants API works by
changing `base_url`."""

from __future__ import annotations

import json
import time
import urllib.request

import openai
import pytest
from api_testkit import API_KEY, LiveApi, wait_for
from django.urls import reverse
from openai import AssistantEventHandler
from openai.types.beta.threads import Message, Text, TextDelta

from stores import ThreadStore, new_message, new_thread

# The package marks every Assistants method deprecated; this server keeps that API alive.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings(r"ignore:deprecated\Z:DeprecationWarning"),  # assistants.*
]

LONG_TEXT = " ".join(f"word{n}" for n in range(120))  # the echo model types 6 s of it


@pytest.fixture
def assistant(api: openai.OpenAI):
    return api.beta.assistants.create(model="echo", name="Echo", instructions="Repeat.")


def drafted(store: ThreadStore, thread_id: str, run_id: str):
    """The run's reply once the worker has written some of it."""

    def some_text():
        draft = store.draft(thread_id, run_id)
        return draft if draft and draft.text else None

    return wait_for(some_text, 10, "the run's first words")


class Recorder(AssistantEventHandler):
    """Remembers every event, the text deltas and the finished messages."""

    def __init__(self, on_first_delta=None) -> None:
        super().__init__()
        self.events: list[str] = []
        self.deltas: list[str] = []
        self.done: list[Message] = []
        self.on_first_delta = on_first_delta

    def on_event(self, event) -> None:
        self.events.append(event.event)

    def on_text_delta(self, delta: TextDelta, snapshot: Text) -> None:
        self.deltas.append(delta.value or "")
        assert snapshot.value == "".join(self.deltas)
        if self.on_first_delta is not None and len(self.deltas) == 1:
            self.on_first_delta()

    def on_message_done(self, message: Message) -> None:
        self.done.append(message)

    def distinct_events(self) -> list[str]:
        """The events, with each run of deltas counted once."""
        return [e for i, e in enumerate(self.events) if i == 0 or e != self.events[i - 1]]


# ------------------------------------------------------------------ assistants


def test_assistants_can_be_created_listed_changed_and_deleted(api: openai.OpenAI):
    created = api.beta.assistants.create(
        model="echo", name="Helper", instructions="Be brief.", metadata={"team": "support"}
    )
    assert created.id.startswith("asst_")
    assert (created.object, created.model, created.instructions) == (
        "assistant",
        "echo",
        "Be brief.",
    )
    assert created.metadata == {"team": "support"}

    assert api.beta.assistants.retrieve(created.id).name == "Helper"
    assert created.id in [a.id for a in api.beta.assistants.list(limit=100)]

    changed = api.beta.assistants.update(created.id, name="Renamed", metadata={"v": "2"})
    assert (changed.name, changed.metadata, changed.instructions) == (
        "Renamed",
        {"v": "2"},
        "Be brief.",
    )

    deleted = api.beta.assistants.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "assistant.deleted")
    with pytest.raises(openai.NotFoundError):
        api.beta.assistants.retrieve(created.id)


# --------------------------------------------------------- threads and messages


def test_a_thread_is_created_with_messages_and_metadata_then_grows(api: openai.OpenAI):
    thread = api.beta.threads.create(
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi! How can I help?"}]},
        ],
        metadata={"customer": "acme"},
    )
    assert thread.object == "thread"
    assert thread.metadata == {"customer": "acme"}

    added = api.beta.threads.messages.create(
        thread.id,
        role="user",
        content=[{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}],
        metadata={"source": "test"},
    )
    assert (added.object, added.role, added.status, added.thread_id) == (
        "thread.message",
        "user",
        "completed",
        thread.id,
    )
    assert [block.text.value for block in added.content] == ["Part one.", "Part two."]
    assert api.beta.threads.messages.retrieve(added.id, thread_id=thread.id).metadata == {
        "source": "test"
    }

    texts = [
        (m.role, [b.text.value for b in m.content])
        for m in api.beta.threads.messages.list(thread.id, order="asc")
    ]
    assert texts == [
        ("user", ["Hello"]),
        ("assistant", ["Hi! How can I help?"]),
        ("user", ["Part one.", "Part two."]),
    ]


def test_threads_and_messages_can_be_changed_and_deleted(api: openai.OpenAI):
    thread = api.beta.threads.create(messages=[{"role": "user", "content": "Keep me"}])
    doomed = api.beta.threads.messages.create(thread.id, role="user", content="Delete me")

    assert api.beta.threads.update(thread.id, metadata={"stage": "2"}).metadata == {"stage": "2"}
    assert api.beta.threads.retrieve(thread.id).metadata == {"stage": "2"}
    tagged = api.beta.threads.messages.update(doomed.id, thread_id=thread.id, metadata={"x": "y"})
    assert tagged.metadata == {"x": "y"}

    gone = api.beta.threads.messages.delete(doomed.id, thread_id=thread.id)
    assert (gone.deleted, gone.object) == (True, "thread.message.deleted")
    remaining = [m.content[0].text.value for m in api.beta.threads.messages.list(thread.id)]
    assert remaining == ["Keep me"]

    deleted = api.beta.threads.delete(thread.id)
    assert (deleted.deleted, deleted.object) == (True, "thread.deleted")
    with pytest.raises(openai.NotFoundError):
        api.beta.threads.retrieve(thread.id)


def test_messages_auto_paginate_to_the_end_in_both_orders(api: openai.OpenAI):
    sent = [f"message {n}" for n in range(25)]
    thread = api.beta.threads.create(messages=[{"role": "user", "content": t} for t in sent])

    oldest_first = api.beta.threads.messages.list(thread.id, limit=10, order="asc")
    assert [len(page.data) for page in oldest_first.iter_pages()] == [10, 10, 5]
    assert [m.content[0].text.value for m in oldest_first] == sent

    newest_first = api.beta.threads.messages.list(thread.id, limit=10)  # desc by default
    assert [m.content[0].text.value for m in newest_first] == sent[::-1]

    page = api.beta.threads.messages.list(thread.id, limit=3, order="asc")
    assert (page.first_id, page.last_id, page.has_more) == (page.data[0].id, page.data[2].id, True)


def test_threads_can_be_listed_by_page_in_both_orders(live_api: LiveApi):
    made = [live_api.request("POST", "/threads", {"metadata": {"n": str(n)}})[2] for n in range(3)]
    ids = [thread["id"] for thread in made]

    def walk(order: str) -> list[str]:
        seen, after = [], None
        for _ in range(100):
            query = f"?limit=2&order={order}" + (f"&after={after}" if after else "")
            status, _, page = live_api.request("GET", f"/threads{query}")
            assert status == 200 and page["object"] == "list" and len(page["data"]) <= 2
            seen += [thread["id"] for thread in page["data"]]
            if not page["has_more"]:
                return seen
            after = page["last_id"]
        pytest.fail("the thread list never ended")

    assert [i for i in walk("desc") if i in ids] == ids[::-1]
    assert [i for i in walk("asc") if i in ids] == ids


# ------------------------------------------------------------------------ runs


def test_create_and_poll_completes_with_the_echo_model(api: openai.OpenAI, assistant):
    thread = api.beta.threads.create(messages=[{"role": "user", "content": "Hello there"}])

    run = api.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, metadata={"job": "1"}
    )

    assert run.status == "completed"
    assert (run.object, run.thread_id, run.assistant_id) == ("thread.run", thread.id, assistant.id)
    assert (run.model, run.instructions, run.metadata) == ("echo", "Repeat.", {"job": "1"})
    assert run.started_at is not None and run.completed_at is not None
    assert run.usage is not None and run.usage.total_tokens > 0

    steps = list(api.beta.threads.runs.steps.list(run.id, thread_id=thread.id))
    assert [(s.type, s.status) for s in steps] == [("message_creation", "completed")]
    reply_id = steps[0].step_details.message_creation.message_id
    step = api.beta.threads.runs.steps.retrieve(steps[0].id, thread_id=thread.id, run_id=run.id)
    assert step.id == steps[0].id

    reply = api.beta.threads.messages.list(thread.id, limit=1).data[0]
    assert (reply.id, reply.role, reply.run_id) == (reply_id, "assistant", run.id)
    assert reply.content[0].text.value == "Echo: Hello there"
    only_run = api.beta.threads.messages.list(thread.id, run_id=run.id)
    assert [m.id for m in only_run] == [reply_id]


def test_runs_take_their_defaults_from_the_assistant_unless_overridden(
    api: openai.OpenAI, assistant
):
    thread = api.beta.threads.create()
    run = api.beta.threads.runs.create(
        thread_id=thread.id,
        assistant_id=assistant.id,
        model="echo-2",
        additional_instructions="Be kind.",
        additional_messages=[{"role": "user", "content": "Added with the run"}],
    )
    assert (run.model, run.instructions, run.status) == ("echo-2", "Repeat.\n\nBe kind.", "queued")
    run = api.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert run.status == "completed"
    reply = api.beta.threads.messages.list(thread.id, limit=1).data[0]
    assert reply.content[0].text.value == "Echo: Added with the run"

    listed = api.beta.threads.runs.list(thread.id)
    assert [r.id for r in listed] == [run.id]
    changed = api.beta.threads.runs.update(run.id, thread_id=thread.id, metadata={"seen": "y"})
    assert api.beta.threads.runs.retrieve(run.id, thread_id=thread.id).metadata == {"seen": "y"}
    assert changed.status == "completed"


def test_run_responses_tell_the_client_how_often_to_poll(live_api: LiveApi, api, assistant):
    thread = api.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    status, headers, run = live_api.request(
        "POST", f"/threads/{thread.id}/runs", {"assistant_id": assistant.id}
    )
    assert status == 200 and run["object"] == "thread.run"
    assert int(headers["openai-poll-after-ms"]) > 0
    assert run["expires_at"] > run["created_at"]  # an active run says when it would expire
    api.beta.threads.runs.poll(run["id"], thread_id=thread.id)


def test_a_slow_run_can_be_cancelled(live_api: LiveApi, api: openai.OpenAI, assistant):
    thread = api.beta.threads.create(messages=[{"role": "user", "content": LONG_TEXT}])
    run = api.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    drafted(live_api.store, thread.id, run.id)

    asked = api.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert asked.status in {"cancelling", "cancelled"}
    run = api.beta.threads.runs.poll(run.id, thread_id=thread.id)

    assert run.status == "cancelled" and run.cancelled_at is not None
    reply = api.beta.threads.messages.list(thread.id, limit=1).data[0]
    assert (reply.role, reply.status, reply.run_id) == ("assistant", "incomplete", run.id)
    kept = reply.content[0].text.value
    assert kept and f"Echo: {LONG_TEXT}".startswith(kept)  # what was written before the cancel
    assert len(kept) < len(f"Echo: {LONG_TEXT}")


def test_a_busy_thread_and_a_finished_run_refuse_with_400(api: openai.OpenAI, assistant):
    thread = api.beta.threads.create(messages=[{"role": "user", "content": LONG_TEXT}])
    run = api.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    with pytest.raises(openai.BadRequestError, match="active run"):
        api.beta.threads.messages.create(thread.id, role="user", content="Me too")
    with pytest.raises(openai.BadRequestError, match="active run"):
        api.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    api.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    ended = api.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert ended.status == "cancelled"
    with pytest.raises(openai.BadRequestError) as refused:
        api.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert refused.value.status_code == 400
    assert refused.value.code == "run_already_ended"
    # The thread is free again.
    api.beta.threads.messages.create(thread.id, role="user", content="Now I can")


def test_cancelling_a_finished_run_is_a_bad_request(api: openai.OpenAI, assistant):
    thread = api.beta.threads.create(messages=[{"role": "user", "content": "quick"}])
    run = api.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"

    with pytest.raises(openai.BadRequestError, match="status 'completed'"):
        api.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert api.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "completed"


def test_create_thread_and_run_then_poll(api: openai.OpenAI, assistant):
    run = api.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "all at once"}], "metadata": {"a": "b"}},
    )
    assert run.status == "completed"
    assert api.beta.threads.retrieve(run.thread_id).metadata == {"a": "b"}
    reply = api.beta.threads.messages.list(run.thread_id, limit=1).data[0]
    assert reply.content[0].text.value == "Echo: all at once"


# ------------------------------------------------------------------- streaming

EVENTS_OF_A_RUN = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.message.created",
    "thread.message.delta",
    "thread.message.completed",
    "thread.run.step.completed",
    "thread.run.completed",
]


def test_a_streamed_run_delivers_text_deltas_and_the_final_message(api: openai.OpenAI, assistant):
    words = " ".join(f"w{n}" for n in range(20))
    thread = api.beta.threads.create(messages=[{"role": "user", "content": words}])
    handler = Recorder()

    with api.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=handler
    ) as stream:
        stream.until_done()
        final_run = stream.get_final_run()

    assert handler.distinct_events() == EVENTS_OF_A_RUN
    assert len(handler.deltas) > 1  # it streamed, it did not arrive at once
    assert "".join(handler.deltas) == f"Echo: {words}"
    [message] = handler.done
    assert (message.status, message.content[0].text.value) == ("completed", f"Echo: {words}")
    assert final_run.status == "completed"
    stored = api.beta.threads.messages.retrieve(message.id, thread_id=thread.id)
    assert stored.content[0].text.value == f"Echo: {words}"


def test_create_thread_and_run_can_stream(api: openai.OpenAI, assistant):
    handler = Recorder()
    with api.beta.threads.create_and_run_stream(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "stream me"}]},
        event_handler=handler,
    ) as stream:
        stream.until_done()

    assert handler.distinct_events() == ["thread.created", *EVENTS_OF_A_RUN]
    assert "".join(handler.deltas) == "Echo: stream me"


def test_a_stream_tells_how_a_cancelled_run_ended(api: openai.OpenAI, assistant):
    thread = api.beta.threads.create(messages=[{"role": "user", "content": LONG_TEXT}])
    run_ids: list[str] = []

    def cancel() -> None:
        api.beta.threads.runs.cancel(run_ids[0], thread_id=thread.id)

    handler = Recorder(on_first_delta=cancel)
    with api.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=handler
    ) as stream:
        for event in stream:
            if event.event == "thread.run.created":
                run_ids.append(event.data.id)

    events = [e for e in handler.distinct_events() if e != "thread.run.cancelling"]
    assert events[-3:] == [
        "thread.message.incomplete",
        "thread.run.step.cancelled",
        "thread.run.cancelled",
    ]
    [message] = handler.done
    assert message.status == "incomplete"
    streamed = "".join(handler.deltas)
    assert streamed and f"Echo: {LONG_TEXT}".startswith(streamed)
    assert message.content[0].text.value == streamed


def test_streams_are_capped_so_the_server_keeps_threads_for_everything_else(
    live_api: LiveApi, api: openai.OpenAI, assistant
):
    """The live server runs 6 threads (GUNICORN_THREADS), so it holds 3 streams at once."""
    held = []
    try:
        for _ in range(3):
            thread = api.beta.threads.create(messages=[{"role": "user", "content": LONG_TEXT}])
            stream = live_api.open_stream(
                f"/threads/{thread.id}/runs", {"assistant_id": assistant.id}
            )
            assert stream.readline() == b"event: thread.run.created\n"
            held.append((stream, thread.id, json.loads(stream.readline()[len("data: ") :])["id"]))

        started = time.monotonic()
        with urllib.request.urlopen(f"{live_api.base_url}/healthz", timeout=5) as page:
            assert page.status == 200
        assert live_api.request("GET", "/threads?limit=1")[0] == 200
        assert time.monotonic() - started < 2

        extra = api.beta.threads.create(messages=[{"role": "user", "content": "one more"}])
        with pytest.raises(openai.RateLimitError):
            api.with_options(max_retries=0).beta.threads.runs.create(
                thread_id=extra.id, assistant_id=assistant.id, stream=True
            )
        assert api.beta.threads.runs.list(extra.id).data == []  # refused before it started
    finally:
        for stream, thread_id, run_id in held:
            api.beta.threads.runs.cancel(run_id, thread_id=thread_id)
            stream.close()


# ------------------------------------------------------------------------ errors


def test_unknown_ids_are_not_found(api: openai.OpenAI, assistant):
    thread = api.beta.threads.create()
    calls = [
        lambda: api.beta.threads.retrieve("thread_missing"),
        lambda: api.beta.threads.messages.retrieve("msg_missing", thread_id=thread.id),
        lambda: api.beta.threads.messages.list("thread_missing"),
        lambda: api.beta.threads.runs.retrieve("run_missing", thread_id=thread.id),
        lambda: api.beta.threads.runs.steps.list("run_missing", thread_id=thread.id),
        lambda: api.beta.assistants.retrieve("asst_missing"),
        lambda: api.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_missing"),
        lambda: api.beta.threads.retrieve("../../etc"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert missing.value.body["type"] == "invalid_request_error"
    assert api.beta.threads.runs.list(thread.id).data == []  # no run was made


def test_requests_without_a_valid_key_are_refused(live_api: LiveApi, api: openai.OpenAI):
    with (
        openai.OpenAI(base_url=f"{live_api.base_url}/v1", api_key="ts_not_a_key") as wrong,
        pytest.raises(openai.AuthenticationError, match="Incorrect API key"),
    ):
        wrong.beta.threads.create()
    with pytest.raises(openai.AuthenticationError, match="didn't provide an API key"):
        api.beta.threads.create(extra_headers={"Authorization": openai.Omit()})

    status, headers, body = live_api.request("GET", "/threads", key=None)
    assert status == 401 and headers["Content-Type"] == "application/json"
    assert body["error"]["type"] == "invalid_request_error"


# ----------------------------------------------------------------- one store


@pytest.mark.django_db
def test_the_api_and_the_dashboard_share_one_store(
    live_api: LiveApi, api: openai.OpenAI, client, django_user_model, settings
):
    made_by_api = api.beta.threads.create(
        messages=[{"role": "user", "content": "Written through the API"}]
    )
    store = live_api.store
    made_in_store = store.create_thread(new_thread({"origin": "dashboard"}))
    store.append_message(
        made_in_store.id, new_message(made_in_store.id, "user", "Written by an operator")
    )

    settings.THREADSITE_STORE_ROOT = store.root  # the dashboard, in process, on that store
    client.force_login(django_user_model.objects.create(username="operator", is_staff=True))
    page = client.get(reverse("thread-detail", args=[made_by_api.id]))
    assert page.status_code == 200
    assert "Written through the API" in page.content.decode()

    seen = api.beta.threads.retrieve(made_in_store.id)
    assert seen.metadata == {"origin": "dashboard"}
    texts = [m.content[0].text.value for m in api.beta.threads.messages.list(seen.id)]
    assert texts == ["Written by an operator"]
    assert API_KEY  # the dashboard needed no key, the API no sign-in
