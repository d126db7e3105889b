"""Hostile input, in process and over a live gunicorn: path traversal in every URL
parameter (raw, percent-encoded, double-encoded, with NUL and newline), oversized bodies
and fields, malformed JSON, huge `limit` values, unknown fields, and HTML or script in
every text field. Each is answered with a clear 4xx (never a 5xx or a debug page), no
file outside the data directory is opened (an audit hook watches every open), and no
text a user wrote is ever served as markup.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from reliability_testkit import API_KEY, REPO_ROOT, Site, finished_run, record_figures, signed_in

from stores import (
    AssistantStore,
    RunError,
    ThreadStore,
    new_assistant,
    new_thread,
)
from threadsite import services

CANARY = "CANARY-outside-the-data-directory"
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {API_KEY}"}

# An ID as an attacker might write it into a URL. The test client decodes the path
# once, as a server does, so "%2e%2e" arrives as ".." and "%252e" as "%2e".
# "{id}" is the real ID of the thing the parameter names.
PATH_PAYLOADS = [
    "..",
    ".",
    "%2e%2e",
    "%252e%252e",
    "..%2f..%2fsecret",
    "%2e%2e%2f%2e%2e%2fsecret",
    "%252e%252e%252fsecret",
    "..%5c..%5csecret",
    "%c0%ae%c0%ae",
    "%00",
    "{id}%00",
    "{id}%00.json",
    "{id}%0a",
    "%0a{id}",
    "{id}%0d%0a",
    "{id}%20",
    "{id}%2f",
    "%2fetc%2fpasswd",
    ".threadsite",
    ".lock",
    "escape",  # a symlink in the store root to a directory outside
    "~",
    "a" * 129,
    "x" * 4000,
]
QUERY_PAYLOADS = [
    "../../secret",
    "%2e%2e%2fsecret",
    "\x00",
    "line\nbreak",
    "-1",
    "0",
    "99999999999999999999999999",
    "1e9",
    "\u0661\u0660",  # Arabic-Indic digits: isdigit() says yes
    "x" * 5000,
]
LIMITS = ["0", "-1", "101", "1e2", "99999999999999999999", "abc", "", " 5", "\u0665", "5\n"]
XSS = [
    '<script>alert("x")</script>',
    '"><img src=x onerror=alert(1)>',
    "</textarea><svg onload=alert(1)>",
    "' onmouseover='alert(1)",
]


# -------------------------------------------------------------- watching opens


class OpenWatch:
    """An audit hook (installed once, it cannot be removed) that notes every path this
    process opens, lists, renames or removes while `watching`."""

    events = {"open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.link",
              "os.remove", "os.rmdir", "os.symlink", "os.truncate", "os.chmod", "os.utime",
              "shutil.rmtree", "os.chown"}  # fmt: skip
    installed = False
    watching = False
    seen: list[tuple[str, Any]] = []

    @classmethod
    def install(cls) -> None:
        if not cls.installed:
            sys.addaudithook(cls.hook)
            cls.installed = True

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.watching and event in cls.events and args:
            cls.seen.append((event, args[0]))

    @classmethod
    @contextmanager
    def watch(cls) -> Iterator[list[tuple[str, Any]]]:
        cls.seen = []
        cls.watching = True
        try:
            yield cls.seen
        finally:
            cls.watching = False


def allowed_roots(data_dir: Path) -> list[str]:
    roots = {data_dir, REPO_ROOT, Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    # Fixed system files: randomness, the time zone, and the mount table (a store asks
    # once which filesystem it is on).
    system = ["/dev/urandom", "/etc/localtime", str(Path("/proc/self/mounts").resolve())]
    return [str(root.resolve()) for root in roots] + system


def outside(seen: list[tuple[str, Any]], roots: list[str]) -> list[str]:
    """The paths among `seen` that name something outside the allowed roots. A relative
    name (opened beside a directory descriptor, as the store does) must be one plain
    component."""
    bad = []
    for event, target in seen:
        if isinstance(target, int):
            continue  # a descriptor: what it names was checked when it was opened
        try:
            name = target.decode() if isinstance(target, bytes) else str(target)
        except UnicodeDecodeError:
            bad.append(f"{event} {target!r}")
            continue
        if not name.startswith("/"):
            if "/" in name or name in ("", ".", "..") or "\x00" in name or "\n" in name:
                bad.append(f"{event} {name!r}")
            continue
        resolved = str(Path(name).resolve())
        if not any(resolved == root or resolved.startswith(root + "/") for root in roots):
            bad.append(f"{event} {name!r}")
    return bad


# ------------------------------------------------------------------- the world


@dataclass
class World:
    data_dir: Path
    thread: str
    run: str
    step: str
    message: str
    assistant: str


@pytest.fixture
def world(settings: Any, tmp_path: Path, django_user_model: Any) -> World:
    data_dir = tmp_path / "data"
    settings.THREADSITE_STORE_ROOT = data_dir / "threads"
    settings.THREADSITE_ASSISTANTS_ROOT = data_dir / "assistants"
    settings.THREADSITE_API_KEYS = [API_KEY]
    settings.THREADSITE_API_KEYS_FILE = data_dir / "api_keys"
    settings.THREADSITE_AUTH_GENERATION_FILE = data_dir / "auth-generation"
    settings.CACHES = {
        **settings.CACHES,
        "sessions": {**settings.CACHES["sessions"], "LOCATION": data_dir / "sessions"},
    }
    services.clear_store_cache()
    store = ThreadStore(data_dir / "threads")
    thread, message, run, step = finished_run(store)
    assistant = AssistantStore(data_dir / "assistants").create_assistant(new_assistant(model="e"))
    # Bait outside the data directory, and symlinks in the store that lead to it.
    bait = tmp_path / "outside"
    (bait / "runs" / "run_bait" / "steps").mkdir(parents=True)
    (bait / "meta.json").write_text(json.dumps({"id": "escape", "metadata": {"c": CANARY}}))
    (bait / "secret").write_text(CANARY)
    (bait / "runs" / "run_bait" / "status.json").write_text(json.dumps({"id": CANARY}))
    (data_dir / "threads" / "escape").symlink_to(bait)
    (data_dir / "threads" / thread.id / "runs" / "escape").symlink_to(bait / "runs" / "run_bait")
    (data_dir / "assistants" / "escape.json").symlink_to(bait / "meta.json")
    (data_dir / "secret").symlink_to(bait / "secret")
    OpenWatch.install()
    return World(data_dir.resolve(), thread.id, run.id, step.id, message.id, assistant.id)


@pytest.fixture
def staff(client: Client, django_user_model: Any) -> Client:
    user = django_user_model.objects.create_user(username="ada", password="x", is_staff=True)
    client.force_login(user)
    return client


Route = tuple[str, str, tuple[str, ...]]  # method, template, its parameters

ROUTES: list[Route] = [
    ("GET", "/threads/{thread}/", ("thread",)),
    ("GET", "/threads/{thread}/messages?before=1", ("thread",)),
    ("POST", "/threads/{thread}/messages", ("thread",)),
    ("POST", "/threads/{thread}/metadata", ("thread",)),
    ("GET", "/threads/{thread}/export.json", ("thread",)),
    ("GET", "/threads/{thread}/export.md", ("thread",)),
    ("POST", "/threads/{thread}/runs", ("thread",)),
    ("GET", "/threads/{thread}/runs/{run}/", ("thread", "run")),
    ("POST", "/threads/{thread}/runs/{run}/cancel", ("thread", "run")),
    ("GET", "/v1/assistants/{assistant}", ("assistant",)),
    ("POST", "/v1/assistants/{assistant}", ("assistant",)),
    ("DELETE", "/v1/assistants/{assistant}", ("assistant",)),
    ("GET", "/v1/threads/{thread}", ("thread",)),
    ("POST", "/v1/threads/{thread}", ("thread",)),
    ("DELETE", "/v1/threads/{thread}", ("thread",)),
    ("GET", "/v1/threads/{thread}/messages", ("thread",)),
    ("POST", "/v1/threads/{thread}/messages", ("thread",)),
    ("GET", "/v1/threads/{thread}/messages/{message}", ("thread", "message")),
    ("POST", "/v1/threads/{thread}/messages/{message}", ("thread", "message")),
    ("DELETE", "/v1/threads/{thread}/messages/{message}", ("thread", "message")),
    ("GET", "/v1/threads/{thread}/runs", ("thread",)),
    ("POST", "/v1/threads/{thread}/runs", ("thread",)),
    ("GET", "/v1/threads/{thread}/runs/{run}", ("thread", "run")),
    ("POST", "/v1/threads/{thread}/runs/{run}", ("thread", "run")),
    ("POST", "/v1/threads/{thread}/runs/{run}/cancel", ("thread", "run")),
    ("GET", "/v1/threads/{thread}/runs/{run}/steps", ("thread", "run")),
    ("GET", "/v1/threads/{thread}/runs/{run}/steps/{step}", ("thread", "run", "step")),
]
BODIES = {
    "/messages": {"text": "hi", "role": "user", "content": "hi"},
    "/metadata": {"rows": "1", "key_0": "a", "value_0": "b"},
    "/runs": {"model": "echo", "assistant_id": "asst_x"},
}


def send(client: Client, method: str, path: str, body: Any = None, **extra: Any) -> Any:
    if method == "GET" and "data" in extra:  # a query string
        return client.get(path, **(AUTH if path.startswith("/v1/") else {}), **extra)
    if path.startswith("/v1/"):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body or {})
        return client.generic(method, path, data, content_type="application/json", **AUTH, **extra)
    if method == "POST":
        return client.post(path, body or {}, **extra)
    return client.generic(method, path, **extra)


def clear_answer(response: Any, path: str) -> str | None:
    """Why `response` is not a clear answer to a hostile request, or None."""
    status = response.status_code
    if status >= 500:
        return f"answered {status}"
    body = response.content.decode(errors="replace")
    if "Traceback" in body or CANARY in body:
        return "leaked a traceback or the bait"
    if path.startswith("/v1/") and status >= 400:
        try:
            if not response.json()["error"]["message"]:
                return "an API error without a message"
        except (ValueError, KeyError):
            return "an API error that is not JSON"
    return None


def test_path_traversal_in_every_url_parameter(staff: Client, world: World) -> None:
    roots = allowed_roots(world.data_dir)
    real = {
        "thread": world.thread,
        "run": world.run,
        "step": world.step,
        "message": world.message,
        "assistant": world.assistant,
    }
    wrong: list[str] = []
    tried = 0
    for method, template, params in ROUTES:
        body = next((b for suffix, b in BODIES.items() if suffix in template), None)
        for param in params:
            for payload in PATH_PAYLOADS:
                value = payload.replace("{id}", real[param])
                path = template.format(**{**real, param: value})
                with OpenWatch.watch() as seen:
                    response = send(staff, method, path, body)
                tried += 1
                where = f"{method} {path[:120]}"
                if response.status_code not in (400, 404, 405):
                    wrong.append(f"{where}: {response.status_code}, not 400/404")
                if problem := clear_answer(response, path):
                    wrong.append(f"{where}: {problem}")
                if escaped := outside(seen, roots):
                    wrong.append(f"{where}: touched {escaped[:3]}")
    record_figures("hostile_paths", requests=tried, routes=len(ROUTES), problems=len(wrong))
    assert not wrong, f"{len(wrong)} of {tried}:\n" + "\n".join(wrong[:40])


QUERY_ROUTES = [
    ("/threads/", ("q", "status", "key", "value", "cursor")),
    ("/threads/{thread}/messages", ("before",)),
    ("/threads/{thread}/", ("after",)),
    ("/v1/threads", ("limit", "order", "after", "before")),
    ("/v1/threads/{thread}/messages", ("limit", "order", "after", "before", "run_id")),
    ("/v1/threads/{thread}/runs", ("limit", "order", "after", "before")),
    ("/v1/threads/{thread}/runs/{run}/steps", ("limit", "order", "after", "before")),
    ("/v1/assistants", ("limit", "order", "after", "before")),
]


def test_hostile_query_strings_and_huge_limits(staff: Client, world: World) -> None:
    roots = allowed_roots(world.data_dir)
    wrong: list[str] = []
    tried = 0
    for template, params in QUERY_ROUTES:
        path = template.format(thread=world.thread, run=world.run)
        for param in params:
            payloads = QUERY_PAYLOADS + (LIMITS if param == "limit" else [])
            for payload in payloads:
                headers = (
                    {"HTTP_HX_REQUEST": "true"} if param == "after" and "v1" not in path else {}
                )
                with OpenWatch.watch() as seen:
                    response = send(staff, "GET", path, None, data={param: payload}, **headers)
                tried += 1
                where = f"GET {path}?{param}={payload[:40]!r}"
                if problem := clear_answer(response, path):
                    wrong.append(f"{where}: {problem}")
                if param == "limit" and response.status_code != 400:
                    wrong.append(f"{where}: {response.status_code}, not 400")
                if escaped := outside(seen, roots):
                    wrong.append(f"{where}: touched {escaped[:3]}")
    record_figures("hostile_queries", requests=tried, problems=len(wrong))
    assert not wrong, f"{len(wrong)} of {tried}:\n" + "\n".join(wrong[:40])


def api_bodies(world: World) -> list[tuple[str, str, Any, str]]:
    """(path, what, body, description): bodies no endpoint should accept."""
    big = "x" * 32_001
    thread, run = world.thread, world.run
    messages = f"/v1/threads/{thread}/messages"
    runs = f"/v1/threads/{thread}/runs"
    cases: list[tuple[str, str, Any, str]] = []
    for raw in [
        "{",
        "[]",
        "1",
        '"text"',
        "null",
        "{'single': 'quotes'}",
        '{"role": "user", "content": "x"',
        b"\xff\xfe\x00",
        b'{"role": "user", "content": "\xff"}',
        "[" * 50_000,
        '{"a":' * 50_000,
    ]:
        cases.append((messages, "malformed JSON", raw, repr(raw)[:40]))
    for body in [
        {"role": "system", "content": "x"},
        {"role": 1, "content": "x"},
        {"role": "user"},
        {"role": "user", "content": None},
        {"role": "user", "content": ""},
        {"role": "user", "content": 7},
        {"role": "user", "content": []},
        {"role": "user", "content": [{}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "user", "content": [{"type": "text", "text": 1}]},
        {"role": "user", "content": big},
        {"role": "user", "content": [{"type": "text", "text": big}]},
        {"role": "user", "content": "x", "metadata": []},
        {"role": "user", "content": "x", "metadata": {"k": 1}},
        {"role": "user", "content": "x", "metadata": {"k" * 65: "v"}},
        {"role": "user", "content": "x", "metadata": {"k": "v" * 513}},
        {"role": "user", "content": "x", "metadata": {str(i): "v" for i in range(17)}},
    ]:
        cases.append((messages, "a bad message", body, json.dumps(body)[:60]))
    for body in [
        {},
        {"assistant_id": None},
        {"assistant_id": 1},
        {"assistant_id": "../../secret"},
        {"assistant_id": "escape"},
        {"assistant_id": world.assistant, "model": 1},
        {"assistant_id": world.assistant, "instructions": ["x"]},
        {"assistant_id": world.assistant, "instructions": "x" * 256_001},
        {"assistant_id": world.assistant, "stream": "yes"},
        {"assistant_id": world.assistant, "tools": [{"type": "code_interpreter"}]},
        {"assistant_id": world.assistant, "additional_messages": {"role": "user"}},
        {
            "assistant_id": world.assistant,
            "additional_messages": [{"role": "user", "content": "x"}] * 101,
        },
    ]:
        cases.append((runs, "a bad run", body, json.dumps(body)[:60]))
    cases += [
        ("/v1/threads", "a bad thread", {"messages": "x"}, "messages not a list"),
        ("/v1/threads", "a bad thread", {"metadata": "x"}, "metadata not an object"),
        ("/v1/assistants", "a bad assistant", {"model": "e", "name": "n" * 257}, "long name"),
        ("/v1/assistants", "a bad assistant", {}, "no model"),
        (f"/v1/threads/{thread}/runs/{run}", "bad run metadata", {"metadata": 1}, "metadata 1"),
        (messages, "an oversized body", b"{" + b" " * 1_000_001 + b"}", "1 MB of spaces"),
    ]
    return cases


def test_malformed_and_oversized_api_bodies_get_a_clear_4xx(world: World) -> None:
    client = Client()
    roots = allowed_roots(world.data_dir)
    wrong: list[str] = []
    cases = api_bodies(world)
    for path, what, body, description in cases:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        with OpenWatch.watch() as seen:
            response = client.post(path, data, content_type="application/json", **AUTH)
        where = f"{what} to {path} ({description})"
        if not 400 <= response.status_code < 500:
            wrong.append(f"{where}: {response.status_code} {response.content[:160]!r}")
        elif problem := clear_answer(response, path):
            wrong.append(f"{where}: {problem}")
        if escaped := outside(seen, roots):
            wrong.append(f"{where}: touched {escaped[:3]}")
    record_figures("hostile_api_bodies", requests=len(cases), problems=len(wrong))
    assert not wrong, f"{len(wrong)} of {len(cases)}:\n" + "\n".join(wrong)


def test_unknown_fields_are_ignored_never_obeyed(world: World) -> None:
    """Unknown fields in API bodies are ignored (as the API documents), never stored or
    obeyed: a client cannot choose an ID, a thread, a status or a timestamp."""
    client = Client()
    body = {
        "role": "user",
        "content": "x",
        "id": "msg_chosen_by_the_client",
        "thread_id": "thread_someone_elses",
        "object": "thread.run",
        "created_at": 1,
        "status": "incomplete",
        "run_id": "../../escape",
        "unknown": {"deeply": [{"nested": True}]},
    }
    path = f"/v1/threads/{world.thread}/messages"
    response = client.post(path, json.dumps(body), content_type="application/json", **AUTH)
    assert response.status_code in (200, 400), response.content
    if response.status_code == 200:
        made = response.json()
        assert made["id"] != body["id"] and made["thread_id"] == world.thread
        assert made["created_at"] > 1 and made["run_id"] is None
        assert made["status"] == "completed"
        stored = ThreadStore(world.data_dir / "threads").get_message(world.thread, made["id"])
        assert "unknown" not in stored.to_dict()
    run = client.post(
        f"/v1/threads/{world.thread}/runs",
        json.dumps({"assistant_id": world.assistant, "status": "completed", "id": "run_mine"}),
        content_type="application/json",
        **AUTH,
    )
    assert run.status_code in (200, 400), run.content
    if run.status_code == 200:
        assert run.json()["status"] == "queued" and run.json()["id"] != "run_mine"


DASHBOARD_FORMS = [
    ("/threads/{thread}/messages", {"text": "x" * 32_001}, "a message over 32,000 characters"),
    ("/threads/{thread}/messages", {"text": ""}, "an empty message"),
    ("/threads/new", {"rows": "1", "key_0": "k" * 65, "value_0": "v"}, "a 65-character key"),
    ("/threads/new", {"rows": "1", "key_0": "k", "value_0": "v" * 513}, "a 513-character value"),
    (
        "/threads/new",
        {"rows": "17", **{f"key_{i}": f"k{i}" for i in range(17)}},
        "17 metadata pairs",
    ),
    (
        "/threads/{thread}/metadata",
        {"rows": "1", "key_0": "", "value_0": "v"},
        "a value without a key",
    ),
    ("/threads/new", {f"f{i}": "x" for i in range(1200)}, "1,200 form fields"),
    ("/threads/{thread}/messages", {"text": "x" * 3_000_000}, "a 3 MB body"),
]


def test_oversized_and_invalid_dashboard_forms_get_a_4xx(staff: Client, world: World) -> None:
    wrong = []
    for template, fields, what in DASHBOARD_FORMS:
        path = template.format(thread=world.thread)
        response = staff.post(path, fields)
        if not 400 <= response.status_code < 500:
            wrong.append(f"{what} ({path}): {response.status_code}")
        elif problem := clear_answer(response, path):
            wrong.append(f"{what}: {problem}")
    record_figures("hostile_forms", requests=len(DASHBOARD_FORMS), problems=len(wrong))
    assert not wrong, "\n".join(wrong)


def test_an_invalid_start_run_form_is_a_4xx(staff: Client, world: World) -> None:
    """The start-run form, refused (a model name over 256 characters, or none), answers
    400 like every other refused form, not 200."""
    for fields in ({"model": "m" * 257}, {"model": ""}, {"model": "bad\x00name"}):
        response = staff.post(f"/threads/{world.thread}/runs", fields)
        assert response.status_code == 400, (fields["model"][:10], response.status_code)


def test_html_and_script_in_every_text_field_are_shown_as_text(staff: Client, world: World) -> None:
    store = ThreadStore(world.data_dir / "threads")
    api = Client()
    shown = 0
    for n, payload in enumerate(XSS):
        made = staff.post(
            "/threads/new",
            {"rows": "2", "key_0": payload, "value_0": payload, "key_1": "n", "value_1": str(n),
             "message": payload},
        )  # fmt: skip
        assert made.status_code == 302, made.status_code
        thread_id = made["Location"].split("/")[2]
        api.post(
            f"/v1/threads/{thread_id}/messages",
            json.dumps({"role": "assistant", "content": payload, "metadata": {payload: payload}}),
            content_type="application/json",
            **AUTH,
        )
        started = staff.post(
            f"/threads/{thread_id}/runs", {"model": payload, "instructions": payload}
        )
        assert started.status_code == 302, started.status_code
        run_id = started["Location"].split("/")[4]
        store.force_update_run_status(thread_id, run_id, "failed", RunError(payload, payload))
        pages = [
            "/",
            "/threads/",
            f"/threads/?q={payload}",
            f"/threads/?key={payload}&value={payload}",
            f"/threads/?q={payload}%3D{payload}",
            f"/threads/{thread_id}/",
            f"/threads/{thread_id}/messages?before=999999",
            f"/threads/{thread_id}/runs/{run_id}/",
            f"/threads/{payload}/",
            f"/threads/{thread_id}/runs/{payload}/",
        ]
        for page in pages:
            for htmx in (False, True):
                headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
                response = staff.get(page, **headers)
                body = response.content.decode()
                shown += 1
                assert response.status_code < 500, (page, response.status_code)
                assert payload not in body, f"{page} (htmx={htmx}) serves {payload!r} as markup"
        for export in ("export.json", "export.md"):
            response = staff.get(f"/threads/{thread_id}/{export}")
            assert response["Content-Disposition"].startswith("attachment;")
            assert response["X-Content-Type-Options"] == "nosniff"
            assert not response["Content-Type"].startswith("text/html")
    record_figures("hostile_markup", payloads=len(XSS), pages_checked=shown, unescaped=0)


# --------------------------------------------------------------- raw over HTTP


def raw_request(site: Site, request: bytes) -> int:
    """Send bytes as they are (no client library cleaning them up); the status."""
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"HTTP/1."):
        return 0  # the server closed the connection without an answer: refused
    return int(data.split(b" ", 2)[1])


def test_raw_hostile_request_lines_over_a_live_server(prod_site: Site) -> None:
    thread = prod_site.store.create_thread(new_thread()).id
    session = signed_in(prod_site.base_url).cookies["sessionid"]
    targets = [
        b"/threads/../../etc/passwd/",
        b"/threads/%2e%2e%2f%2e%2e%2fetc/",
        b"/threads/%252e%252e/",
        b"/v1/threads/..%2f..%2fsecret",
        b"/v1/threads/" + thread.encode() + b"%00",
        b"/v1/threads/" + thread.encode() + b"\x00",
        b"/v1/threads/" + thread.encode() + b"%0a",
        b"/threads/" + thread.encode() + b"\x00/",
        b"/static/../threadsite/settings.py",
        b"/static/%2e%2e/%2e%2e/threadsite/settings.py",
        b"/static/..%2f..%2fthreadsite%2fsettings.py",
        b"/v1/threads?limit=99999999999999999999999",
        b"/" + b"a" * 9000,
    ]
    statuses = {}
    for target in targets:
        request = (
            b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n"
            b"Authorization: Bearer " + API_KEY.encode() + b"\r\nConnection: close\r\n"
            b"Cookie: sessionid=" + session.encode() + b"\r\n\r\n"
        )
        statuses[target[:60]] = raw_request(prod_site, request)
    wrong = {t: s for t, s in statuses.items() if s != 0 and not 400 <= s < 500}
    assert not wrong, wrong
    record_figures("hostile_raw_http", requests=len(targets), problems=len(wrong))
