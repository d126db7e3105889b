"""The access matrix: every address of the dashboard and the API, tried as an anonymous
visitor, a viewer, a staff member, a program with an API key and one with a wrong key
(CSRF checks on, as in a browser). What each gets is compared with the table checked in
beside this file, access_matrix.md; `UPDATE_ACCESS_MATRIX=1` rewrites that table, and
the rules below hold whatever it says, so a wrong table cannot be blessed by accident.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from reliability_testkit import API_KEY, WRONG_KEY, finished_run, record_figures

from stores import (
    AssistantStore,
    ThreadStore,
    new_assistant,
    new_run,
    new_thread,
)
from threadsite import services
from threadsite.dashboard.permissions import VIEWERS_GROUP

MATRIX = Path(__file__).with_name("access_matrix.md")
ROLES = ["anonymous", "viewer", "staff", "API key", "wrong key"]

# (method, address, body): bodies are form fields for the dashboard, JSON for /v1.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/", None),
    ("GET", "/threads/", None),
    ("GET", "/threads/?q=k=v", None),
    ("GET", "/threads/new", None),
    ("POST", "/threads/new", {"rows": "1", "key_0": "k", "value_0": "v", "message": "hi"}),
    ("GET", "/threads/{thread}/", None),
    ("GET", "/threads/{thread}/messages?before=1", None),
    ("POST", "/threads/{thread}/messages", {"text": "hello"}),
    ("POST", "/threads/{thread}/metadata", {"rows": "1", "key_0": "k", "value_0": "w"}),
    ("GET", "/threads/{thread}/export.json", None),
    ("GET", "/threads/{thread}/export.md", None),
    ("POST", "/threads/{thread}/runs", {"model": "echo"}),
    ("GET", "/threads/{thread}/runs/{run}/", None),
    ("POST", "/threads/{busy}/runs/{queued}/cancel", {}),
    ("DELETE", "/threads/{thread}/", None),
    ("GET", "/nowhere", None),
    ("GET", "/healthz", None),
    ("GET", "/accounts/login/", None),
    ("POST", "/accounts/logout/", {}),
    ("GET", "/static/css/site.css", None),
    ("GET", "/v1/assistants", None),
    ("POST", "/v1/assistants", {"model": "echo"}),
    ("GET", "/v1/assistants/{assistant}", None),
    ("POST", "/v1/assistants/{assistant}", {"name": "renamed"}),
    ("DELETE", "/v1/assistants/{assistant}", None),
    ("GET", "/v1/threads", None),
    ("POST", "/v1/threads", {}),
    ("POST", "/v1/threads/runs", {"assistant_id": "{assistant}"}),
    ("GET", "/v1/threads/{thread}", None),
    ("POST", "/v1/threads/{thread}", {"metadata": {"k": "w"}}),
    ("DELETE", "/v1/threads/{thread}", None),
    ("GET", "/v1/threads/{thread}/messages", None),
    ("POST", "/v1/threads/{thread}/messages", {"role": "user", "content": "hi"}),
    ("GET", "/v1/threads/{thread}/messages/{message}", None),
    ("POST", "/v1/threads/{thread}/messages/{message}", {"metadata": {"k": "w"}}),
    ("DELETE", "/v1/threads/{thread}/messages/{message}", None),
    ("GET", "/v1/threads/{thread}/runs", None),
    ("POST", "/v1/threads/{thread}/runs", {"assistant_id": "{assistant}"}),
    ("GET", "/v1/threads/{thread}/runs/{run}", None),
    ("POST", "/v1/threads/{thread}/runs/{run}", {"metadata": {"k": "w"}}),
    ("POST", "/v1/threads/{busy}/runs/{queued}/cancel", {}),
    ("GET", "/v1/threads/{thread}/runs/{run}/steps", None),
    ("GET", "/v1/threads/{thread}/runs/{run}/steps/{step}", None),
    ("PUT", "/v1/threads", {}),
    ("GET", "/v1/nowhere", None),
]


@dataclass
class World:
    ids: dict[str, str]  # placeholder -> real ID


def build_world(root: Path) -> World:
    store = ThreadStore(root / "threads")
    thread, message, run, step = finished_run(store)
    busy = store.create_thread(new_thread())
    queued = store.create_run(busy.id, new_run(busy.id))
    assistant = AssistantStore(root / "assistants").create_assistant(new_assistant(model="echo"))
    ids = {
        "thread": thread.id,
        "message": message.id,
        "run": run.id,
        "step": step.id,
        "busy": busy.id,
        "queued": queued.id,
        "assistant": assistant.id,
    }
    return World(ids)


def describe(response: Any, world: World) -> str:
    """A cell of the table: the status, and where a redirect leads (IDs named)."""
    status = response.status_code
    if status not in (301, 302):
        return str(status)
    location = response["Location"]
    if location.startswith("/accounts/login/"):
        return f"{status} sign-in"
    for name, real in world.ids.items():
        location = location.replace(real, "{" + name + "}")
    location = re.sub(r"thread_[0-9a-f]{32}", "{new thread}", location)
    location = re.sub(r"run_[0-9a-f]{32}", "{new run}", location)
    return f"{status} {location}"


class Visitor:
    """One role's client: its session, or its key; CSRF enforced as in a browser."""

    def __init__(self, role: str, users: dict[str, Any]) -> None:
        self.role = role
        self.client = Client(enforce_csrf_checks=True)
        if role in users:
            self.client.force_login(users[role])
        self.headers: dict[str, str] = {}
        if role == "API key":
            self.headers["Authorization"] = f"Bearer {API_KEY}"
        elif role == "wrong key":
            self.headers["Authorization"] = f"Bearer {WRONG_KEY}"
        self.client.get("/accounts/login/")  # the CSRF cookie, as a page visit sets it
        self.csrf = self.client.cookies["csrftoken"].value

    def send(self, method: str, path: str, body: dict[str, Any] | None, world: World) -> Any:
        path = path.format(**world.ids)
        headers = {**self.headers, "X-CSRFToken": self.csrf}
        if path.startswith("/v1/"):
            data = json.dumps(body or {}).replace("{assistant}", world.ids["assistant"])
            if method == "GET":
                return self.client.get(path, headers=headers)
            return self.client.generic(
                method, path, data, content_type="application/json", headers=headers
            )
        if method == "GET":
            return self.client.get(path, headers=headers)
        if method == "POST":
            return self.client.post(path, body or {}, headers=headers)
        return self.client.generic(method, path, headers=headers)


def measure(settings: Any, tmp_path: Path, users: dict[str, Any]) -> dict[tuple[str, str], dict]:
    template = tmp_path / "template"
    world = build_world(template)
    settings.THREADSITE_API_KEYS = [API_KEY]
    settings.THREADSITE_API_KEYS_FILE = tmp_path / "api_keys"
    results: dict[tuple[str, str], dict[str, str]] = {}
    for role in ROLES:
        visitor = Visitor(role, users)
        for n, (method, path, body) in enumerate(ENDPOINTS):
            # A fresh copy of the same store for each change, so every cell starts alike.
            root = template if method == "GET" else tmp_path / f"{role}-{n}"
            if root != template:
                shutil.copytree(template, root, symlinks=True)
            settings.THREADSITE_STORE_ROOT = root / "threads"
            settings.THREADSITE_ASSISTANTS_ROOT = root / "assistants"
            services.clear_store_cache()
            response = visitor.send(method, path, body, world)
            results.setdefault((method, path), {})[role] = describe(response, world)
    return results


def render(results: dict[tuple[str, str], dict[str, str]]) -> str:
    lines = [
        "# Access matrix",
        "",
        "What each kind of visitor gets from every address (tests/reliability/",
        "test_access_matrix.py checks it; `UPDATE_ACCESS_MATRIX=1` rewrites it). IDs in",
        "braces are real IDs of a small store; `302 sign-in` is a redirect to the sign-in",
        "page. Dashboard forms are posted with a valid CSRF token; the API is sent JSON.",
        "",
        "| method | address | " + " | ".join(ROLES) + " |",
        "|---|---|" + "---|" * len(ROLES),
    ]
    for (method, path), cells in results.items():
        row = [method, f"`{path}`", *(f"`{cells[role]}`" for role in ROLES)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[tuple[str, str], dict[str, str]]:
    table = {}
    for line in text.splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 + len(ROLES) and cells[0] in {"GET", "POST", "PUT", "DELETE"}:
            table[(cells[0], cells[1])] = dict(zip(ROLES, cells[2:], strict=True))
    return table


@pytest.fixture
def users(django_user_model: Any) -> dict[str, Any]:
    from django.contrib.auth.models import Group

    viewer = django_user_model.objects.create_user(username="li", password="x")
    viewer.groups.add(Group.objects.get_or_create(name=VIEWERS_GROUP)[0])
    staff = django_user_model.objects.create_user(username="ada", password="x", is_staff=True)
    return {"viewer": viewer, "staff": staff}


def test_every_address_answers_each_visitor_as_the_matrix_says(
    settings: Any, tmp_path: Path, users: dict[str, Any]
) -> None:
    results = measure(settings, tmp_path, users)
    if os.environ.get("UPDATE_ACCESS_MATRIX") == "1":
        MATRIX.write_text(render(results))
    expected = parse(MATRIX.read_text())
    differences = [
        f"{method} {path} as {role}: expected {expected.get((method, path), {}).get(role)}, "
        f"got {cells[role]}"
        for (method, path), cells in results.items()
        for role in ROLES
        if expected.get((method, path), {}).get(role) != cells[role]
    ]
    record_figures(
        "access_matrix",
        addresses=len(ENDPOINTS),
        roles=len(ROLES),
        requests=len(ENDPOINTS) * len(ROLES),
        differences=len(differences),
    )
    assert not differences, "\n".join(differences)


PUBLIC = {"/healthz", "/accounts/login/", "/static/css/site.css"}
WRITERS_ONLY = {"/threads/new"}  # a page that is only a form for a change


def test_the_checked_in_matrix_keeps_the_rules() -> None:
    """Whatever the table says, these hold: the dashboard needs a signed-in account,
    viewers change nothing, the API needs a valid key and nothing else lets one in."""
    table = parse(MATRIX.read_text())
    assert set(table) == {(method, path) for method, path, _ in ENDPOINTS}
    for (method, path), cells in table.items():
        api = path.startswith("/v1/")
        where = f"{method} {path}"
        assert cells["wrong key"] == cells["anonymous"], where
        if api:
            for role in ("anonymous", "viewer", "staff"):
                assert cells[role] == "401", (where, role)
            assert cells["API key"] not in ("401", "403"), where
            assert not cells["API key"].startswith("302"), where
            continue
        assert cells["API key"] == cells["anonymous"], where  # keys open only the API
        if path in PUBLIC or path == "/nowhere":
            continue
        if path == "/accounts/logout/":
            assert cells["anonymous"].startswith("302"), where
            continue
        assert cells["anonymous"] == "302 sign-in", where
        ok = cells["staff"].startswith(("2", "3"))
        if method == "GET":
            assert ok, where
            viewer = "403" if path in WRITERS_ONLY else cells["staff"]
            assert cells["viewer"] == viewer, where
        elif method == "POST":
            assert ok, where
            assert cells["viewer"] == "403", where
        else:
            assert cells["viewer"] == cells["staff"] == "405", where
