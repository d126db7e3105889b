"""The API's HTTP behaviour, in process: validation, the error envelope, keys, CSRF, and
the limit on event streams. (The official client against a real server is in
test_openai_client.py.)"""

from __future__ import annotations

import json
import re
from io import StringIO
from typing import Any

import pytest
from api_testkit import API_KEY
from django.core.management import CommandError, call_command
from django.test import Client

from stores import StoreIOError, new_assistant, new_run
from threadsite import services
from threadsite.api import streaming, views

AUTH = {"Authorization": f"Bearer {API_KEY}"}


class V1:
    """Django's test client, speaking JSON to /v1 with the test key."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, Any]:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body or {})
        response = self.client.generic(
            method,
            f"/v1{path}",
            data=data if method != "GET" else "",
            content_type="application/json",
            headers=AUTH if headers is None else headers,
        )
        assert response["Content-Type"].startswith("application/json"), response.content[:200]
        return response.status_code, response.json(), response

    def error(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        status, payload, _ = self.call(method, path, body, **kwargs)
        assert status >= 400
        assert set(payload["error"]) == {"message", "type", "param", "code"}
        return {"status": status, **payload["error"]}


@pytest.fixture
def v1(client: Client) -> V1:
    return V1(client)


@pytest.fixture
def assistant_id() -> str:
    return services.get_assistant_store().create_assistant(new_assistant(model="echo")).id


@pytest.fixture
def thread_id(v1: V1) -> str:
    status, thread, _ = v1.call("POST", "/threads", {})
    assert status == 200
    return thread["id"]


# ------------------------------------------------------------ routing and errors


def test_unknown_addresses_and_methods_answer_json_never_pages(v1: V1):
    assert v1.error("GET", "/nowhere")["status"] == 404
    assert v1.error("GET", "/threads/x/runs/y/submit_tool_outputs")["status"] == 404
    wrong_method = v1.error("PUT", "/threads")
    assert wrong_method["status"] == 405 and wrong_method["type"] == "invalid_request_error"
    _, _, response = v1.call("DELETE", "/threads/runs")
    assert response.status_code == 405 and response["Allow"] == "POST"


def test_the_api_never_redirects_to_the_sign_in_page(v1: V1):
    for path in ("/threads", "/nowhere", "/threads/thread_x/runs"):
        error = v1.error("GET", path, headers={})
        assert error["status"] == 401
    _, _, response = v1.call("GET", "/threads", headers={})
    assert response["WWW-Authenticate"] == "Bearer"


def test_bad_json_and_big_bodies_are_refused(v1: V1):
    assert v1.error("POST", "/threads", "{not json")["status"] == 400
    assert v1.error("POST", "/threads", "[1, 2]")["message"] == (
        "The request body must be a JSON object."
    )
    assert v1.error("POST", "/threads", b"\xff\xfe")["status"] == 400
    huge = json.dumps({"metadata": {}, "padding": "x" * 1_100_000})
    assert v1.error("POST", "/threads", huge)["status"] == 413


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"metadata": "tags"}, "metadata"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x" * 32_001}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]},
            "messages[0].content[0].text",
        ),
    ],
)
def test_thread_bodies_are_checked_field_by_field(v1: V1, body: dict[str, Any], param: str):
    error = v1.error("POST", "/threads", body)
    assert (error["status"], error["type"], error["param"]) == (400, "invalid_request_error", param)


def test_limits_are_inclusive_and_unknown_fields_are_ignored(v1: V1):
    status, thread, _ = v1.call(
        "POST",
        "/threads",
        {
            "metadata": {f"{n:0>64}": "v" * 512 for n in range(16)},
            "messages": [{"role": "user", "content": "x" * 32_000, "attachments": []}],
            "tool_resources": {"code_interpreter": {"file_ids": []}},
            "something_new": True,
        },
    )
    assert status == 200 and len(thread["metadata"]) == 16


def test_message_bodies_are_checked(v1: V1, thread_id: str):
    assert v1.error("POST", f"/threads/{thread_id}/messages", {"content": "x"})["param"] == "role"
    missing = v1.error("POST", f"/threads/{thread_id}/messages", {"role": "user"})
    assert missing["param"] == "content"
    status, message, _ = v1.call(
        "POST", f"/threads/{thread_id}/messages", {"role": "assistant", "content": "noted"}
    )
    assert status == 200 and message["role"] == "assistant"


@pytest.mark.parametrize(
    ("query", "param"),
    [("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"), ("order=up", "order")],
)
def test_list_parameters_are_checked(v1: V1, thread_id: str, query: str, param: str):
    for path in ("/threads", f"/threads/{thread_id}/messages", f"/threads/{thread_id}/runs"):
        assert v1.error("GET", f"{path}?{query}")["param"] == param


def test_paging_by_an_unknown_cursor_is_a_bad_request(v1: V1, thread_id: str):
    error = v1.error("GET", f"/threads/{thread_id}/messages?after=msg_gone")
    assert (error["status"], error["param"]) == (400, "after")
    assert v1.error("GET", f"/threads/{thread_id}/runs?before=run_gone")["param"] == "before"


def test_paging_before_a_message_gives_the_page_next_to_it(v1: V1):
    _, thread, _ = v1.call(
        "POST", "/threads", {"messages": [{"role": "user", "content": str(n)} for n in range(6)]}
    )
    _, everything, _ = v1.call("GET", f"/threads/{thread['id']}/messages?order=asc")
    ids = [m["id"] for m in everything["data"]]
    _, page, _ = v1.call(
        "GET", f"/threads/{thread['id']}/messages?order=asc&limit=2&before={ids[4]}"
    )
    assert [m["id"] for m in page["data"]] == ids[2:4]
    assert page["has_more"] is True


def test_runs_need_an_existing_assistant_and_no_tools(v1: V1, thread_id: str, assistant_id):
    missing = v1.error("POST", f"/threads/{thread_id}/runs", {"assistant_id": "asst_nope"})
    assert missing["status"] == 404 and "asst_nope" in missing["message"]
    assert v1.error("POST", f"/threads/{thread_id}/runs", {})["param"] == "assistant_id"
    tools = v1.error(
        "POST",
        f"/threads/{thread_id}/runs",
        {"assistant_id": assistant_id, "tools": [{"type": "code_interpreter"}]},
    )
    assert (tools["status"], tools["param"]) == (400, "tools")
    stream = v1.error(
        "POST", f"/threads/{thread_id}/runs", {"assistant_id": assistant_id, "stream": "yes"}
    )
    assert stream["param"] == "stream"
    assert services.get_store().list_runs(thread_id) == []


def test_a_missing_assistant_leaves_no_thread_behind(v1: V1):
    before = len(services.get_store().list_thread_ids())
    error = v1.error("POST", "/threads/runs", {"assistant_id": "asst_nope", "thread": {}})
    assert error["status"] == 404
    assert len(services.get_store().list_thread_ids()) == before


def test_assistants_are_checked_and_kept_beside_the_threads(v1: V1, settings):
    assert v1.error("POST", "/assistants", {"name": "no model"})["param"] == "model"
    status, made, _ = v1.call("POST", "/assistants", {"model": "echo", "name": "A"})
    assert status == 200 and made["object"] == "assistant"
    assert (settings.THREADSITE_ASSISTANTS_ROOT / f"{made['id']}.json").is_file()
    assert services.get_store().list_thread_ids() == []
    status, changed, _ = v1.call("POST", f"/assistants/{made['id']}", {"name": None})
    assert changed["name"] is None and changed["model"] == "echo"


def test_a_failing_disk_is_a_503_and_a_bug_a_500(v1: V1, monkeypatch):
    def broken_store():
        raise StoreIOError("reading thread", OSError(5, "Input/output error"))

    monkeypatch.setattr(views, "get_store", broken_store)
    error = v1.error("GET", "/threads/thread_x")
    assert (error["status"], error["type"]) == (503, "server_error")
    assert "Input/output" not in error["message"]

    monkeypatch.setattr(views, "get_store", lambda: 1 / 0)
    error = v1.error("GET", "/threads/thread_x")
    assert (error["status"], error["type"]) == (500, "server_error")


# ----------------------------------------------------------------------- CSRF


@pytest.mark.django_db
def test_the_api_is_exempt_from_csrf_and_the_dashboard_is_not(staff_user):
    browser = Client(enforce_csrf_checks=True)
    response = browser.post("/v1/threads", "{}", content_type="application/json", headers=AUTH)
    assert response.status_code == 200

    browser.force_login(staff_user)
    response = browser.post("/threads/new", {"metadata-TOTAL_FORMS": "0"})
    assert response.status_code == 403


@pytest.mark.django_db
def test_a_staff_session_is_no_api_key(staff_client):
    response = staff_client.get("/v1/threads")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


# ------------------------------------------------------------------------ keys


def run_apikey(*args: str) -> str:
    out = StringIO()
    call_command("apikey", *args, stdout=out)
    return out.getvalue()


def test_keys_are_created_listed_and_revoked_with_the_command(v1: V1, settings):
    settings.THREADSITE_API_KEYS = []
    output = run_apikey("create", "billing-bot")
    key = re.search(r"^(ts_[A-Za-z0-9_-]{40})$", output, re.MULTILINE).group(1)
    stored = settings.THREADSITE_API_KEYS_FILE.read_text()
    assert key not in stored and "billing-bot" in stored
    assert settings.THREADSITE_API_KEYS_FILE.stat().st_mode & 0o077 == 0

    listing = run_apikey("list")
    assert "billing-bot" in listing and key not in listing
    status, _, _ = v1.call("GET", "/threads", headers={"Authorization": f"Bearer {key}"})
    assert status == 200

    with pytest.raises(CommandError, match="exists already"):
        run_apikey("create", "billing-bot")
    assert "Revoked" in run_apikey("revoke", "billing-bot")
    refused = v1.error("GET", "/threads", headers={"Authorization": f"Bearer {key}"})
    assert (refused["status"], refused["code"]) == (401, "invalid_api_key")
    with pytest.raises(CommandError, match="No API key named"):
        run_apikey("revoke", "billing-bot")


def test_key_names_are_checked(settings):
    with pytest.raises(CommandError, match="key name"):
        run_apikey("create", "../etc")
    assert not settings.THREADSITE_API_KEYS_FILE.exists()


def test_a_server_without_keys_says_how_to_make_one(v1: V1, settings):
    settings.THREADSITE_API_KEYS = []
    error = v1.error("GET", "/threads", headers={"Authorization": "Bearer anything"})
    assert error["status"] == 401 and "apikey create" in error["message"]


def test_wrong_schemes_and_keys_are_refused(v1: V1):
    for header in (f"Basic {API_KEY}", "Bearer", f"Bearer {API_KEY}x", API_KEY):
        assert v1.error("GET", "/threads", headers={"Authorization": header})["status"] == 401


def test_keys_never_reach_the_log(v1: V1, caplog, settings):
    run_apikey("create", "logged")
    v1.call("GET", "/threads", headers={"Authorization": "Bearer ts_wrong_key_1234"})
    settings.THREADSITE_API_KEYS_FILE.write_text("broken line\n")
    v1.call("GET", "/threads", headers={"Authorization": f"Bearer {API_KEY}"})
    assert "ts_wrong_key_1234" not in caplog.text and API_KEY not in caplog.text
    assert "broken" not in caplog.text  # a bad line is reported by number only


# ---------------------------------------------------------------- stream slots


@pytest.mark.django_db  # closing a response signals request_finished, which checks the DB
def test_a_stream_beyond_the_limit_is_refused_before_anything_starts(
    v1: V1, thread_id: str, assistant_id: str, settings, monkeypatch
):
    settings.THREADSITE_API_MAX_STREAMS = 1
    monkeypatch.setattr(streaming, "SLOT_WAIT_SECONDS", 0.05)
    held = streaming.take_slot()
    try:
        error = v1.error(
            "POST", f"/threads/{thread_id}/runs", {"assistant_id": assistant_id, "stream": True}
        )
    finally:
        held.release()
    assert error["status"] == 429 and error["code"] == "rate_limit_exceeded"
    assert services.get_store().list_runs(thread_id) == []  # so a retry is safe

    # With the slot free, the same request streams; closing the response frees the slot.
    store = services.get_store()
    response = v1.client.post(
        f"/v1/threads/{thread_id}/runs",
        json.dumps({"assistant_id": assistant_id, "stream": True}),
        content_type="application/json",
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache"
    chunks = iter(response.streaming_content)
    assert next(chunks).startswith(b"event: thread.run.created\ndata: {")
    response.close()
    [run] = store.list_runs(thread_id)
    store.cancel_run(thread_id, run.id)
    streaming.take_slot().release()  # the slot came back


def test_a_stream_that_fails_to_start_gives_its_slot_back(
    v1: V1, assistant_id: str, settings, monkeypatch
):
    settings.THREADSITE_API_MAX_STREAMS = 1
    monkeypatch.setattr(streaming, "SLOT_WAIT_SECONDS", 0.05)
    error = v1.error(
        "POST", "/threads/thread_missing/runs", {"assistant_id": assistant_id, "stream": True}
    )
    assert error["status"] == 404
    streaming.take_slot().release()


def test_a_busy_thread_refuses_new_runs_with_a_400(v1: V1, thread_id: str, assistant_id: str):
    services.get_store().create_run(thread_id, new_run(thread_id))
    error = v1.error("POST", f"/threads/{thread_id}/runs", {"assistant_id": assistant_id})
    assert (error["status"], error["code"]) == (400, "thread_busy")
    message = v1.error(
        "POST",
        f"/threads/{thread_id}/runs",
        {"assistant_id": assistant_id, "additional_messages": [{"role": "user", "content": "x"}]},
    )
    assert message["status"] == 400
    assert services.get_store().list_messages(thread_id) == []  # nothing was added
