"""Bad disks: os.write, os.fsync, os.rename and os.close fail with ENOSPC or EIO, at the
first, a middle or the last such call of a request, once or from then on. For every
change a person or a program can make (dashboard forms, API calls):

- the answer is a success, or the "storage unavailable" page / the API's 503 error,
  never a crash page;
- a success is on disk (nothing is acknowledged that was not stored);
- everything stored before is unchanged, and the store still checks clean;
- once the disk works again, the same change succeeds.

In process here (the server's own functions patched), and over HTTP below, through a
test-only WSGI entry point (tests/reliability/faulty_wsgi.py) that the product never reads.
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from disk_faults import OPS, Fault, bad_disk
from django.test import Client
from reliability_testkit import API_KEY, api_client, record_figures, running_site, signed_in

from stores import (
    AssistantStore,
    RunRef,
    RunStatus,
    ThreadStore,
    new_assistant,
    new_message,
    new_run,
    new_step,
    new_thread,
)
from threadsite import services
from threadsite.dashboard.threads import _metadata_version

Fingerprint = dict[tuple[str, ...], Any]


@dataclass
class World:
    store: ThreadStore
    idle: str  # a thread with messages and an ended run: free for messages and runs
    busy: str  # a thread whose run `queued` waits
    queued: str
    other: str  # a thread no action touches
    assistant: str
    idle_version: str  # what the metadata form carries, to notice others' edits


def build_world(root: Path) -> World:
    store = ThreadStore(root / "threads")
    assistants = AssistantStore(root / "assistants")
    idle = store.create_thread(new_thread({"k": "before"}))
    store.append_message(idle.id, new_message(idle.id, "user", "one"))
    store.append_message(idle.id, new_message(idle.id, "assistant", "two"))
    done = store.create_run(idle.id, new_run(idle.id))
    claimed = store.claim_run(
        RunRef(run_id=done.id, thread_id=idle.id), worker_id="w", lease_seconds=60, run_timeout=600
    )
    assert claimed is not None
    store.append_step(idle.id, done.id, new_step(idle.id, done.id))
    store.complete_run(idle.id, done.id, new_message(idle.id, "assistant", "reply", run_id=done.id))
    busy = store.create_thread(new_thread())
    store.append_message(busy.id, new_message(busy.id, "user", "waiting"))
    queued = store.create_run(busy.id, new_run(busy.id))
    other = store.create_thread(new_thread({"untouched": "yes"}))
    store.append_message(other.id, new_message(other.id, "user", "keep me"))
    assistant = assistants.create_assistant(new_assistant(model="echo"))
    version = _metadata_version(idle.metadata)
    return World(store, idle.id, busy.id, queued.id, other.id, assistant.id, version)


def fingerprint(store: ThreadStore) -> Fingerprint:
    found: Fingerprint = {}
    for thread_id in store.list_thread_ids():
        found[("thread", thread_id)] = store.get_thread(thread_id).metadata
        found[("messages", thread_id)] = [
            (m.id, m.text, m.status) for m in store.list_messages(thread_id)
        ]
        for run in store.list_runs(thread_id):
            found[("run", thread_id, run.id)] = run.status.value
            found[("steps", thread_id, run.id)] = [
                (s.id, s.status.value) for s in store.list_steps(thread_id, run.id)
            ]
    return found


@dataclass
class Action:
    name: str
    send: Callable[[Client, Client, World, str], Any]  # (dashboard, api, world, marker)
    stored: Callable[[World, str, Any], bool]  # is the change on disk?
    changes: Callable[[World], set[tuple[str, ...]]]  # what the change may alter
    api: bool = False
    # Before the same change is tried again: undo what the first try may have done
    # (a thread keeps one active run; an ended run cannot be cancelled again).
    reset: Callable[[World], None] = lambda world: None


def messages_with(world: World, thread_id: str, marker: str) -> int:
    return sum(m.text == marker for m in world.store.list_messages(thread_id))


def threads_with(world: World, key: str, marker: str) -> list[str]:
    return [
        t
        for t in world.store.list_thread_ids()
        if world.store.get_thread(t).metadata.get(key) == marker
    ]


def refresh_version(world: World) -> None:
    world.idle_version = _metadata_version(world.store.get_thread(world.idle).metadata)


def end_active_run(world: World) -> None:
    active = world.store.active_run(world.idle)
    if active is not None:
        world.store.cancel_run(world.idle, active.id)


def queue_again(world: World) -> None:
    if world.store.get_run(world.busy, world.queued).status.is_terminal:
        world.queued = world.store.create_run(world.busy, new_run(world.busy)).id


def run_in_location(response: Any) -> str | None:
    match = re.search(r"/runs/([^/]+)/$", response.get("Location", ""))
    return match.group(1) if match else None


def api_post(client: Client, path: str, payload: dict[str, Any]) -> Any:
    return client.post(
        f"/v1{path}",
        data=json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {API_KEY}",
    )


ACTIONS = [
    Action(
        "dashboard: new thread with a first message",
        lambda d, a, w, m: d.post(
            "/threads/new", {"rows": "4", "key_0": "marker", "value_0": m, "message": m}
        ),
        lambda w, m, r: any(messages_with(w, t, m) == 1 for t in threads_with(w, "marker", m)),
        lambda w: set(),
    ),
    Action(
        "dashboard: post a message",
        lambda d, a, w, m: d.post(f"/threads/{w.idle}/messages", {"text": m}),
        lambda w, m, r: messages_with(w, w.idle, m) == 1,
        lambda w: set(),
    ),
    Action(
        "dashboard: edit metadata",
        lambda d, a, w, m: d.post(
            f"/threads/{w.idle}/metadata",
            {
                "rows": "4",
                "key_0": "k",
                "value_0": m,
                "version": w.idle_version,
            },
        ),
        lambda w, m, r: w.store.get_thread(w.idle).metadata == {"k": m},
        lambda w: {("thread", w.idle)},
        reset=refresh_version,
    ),
    Action(
        "dashboard: start a run",
        lambda d, a, w, m: d.post(f"/threads/{w.idle}/runs", {"model": "echo"}),
        lambda w, m, r: (
            bool(run_in_location(r))
            and w.store.get_run(w.idle, run_in_location(r)).status is RunStatus.QUEUED
        ),
        lambda w: set(),
        reset=end_active_run,
    ),
    Action(
        "dashboard: cancel a run",
        lambda d, a, w, m: d.post(f"/threads/{w.busy}/runs/{w.queued}/cancel"),
        lambda w, m, r: w.store.get_run(w.busy, w.queued).status is RunStatus.CANCELLED,
        lambda w: {("run", w.busy, w.queued), ("steps", w.busy, w.queued)},
        reset=queue_again,
    ),
    Action(
        "API: create a thread with a message",
        lambda d, a, w, m: api_post(
            a, "/threads", {"metadata": {"marker": m}, "messages": [{"role": "user", "content": m}]}
        ),
        lambda w, m, r: messages_with(w, r.json()["id"], m) == 1,
        lambda w: set(),
        api=True,
    ),
    Action(
        "API: create a message",
        lambda d, a, w, m: api_post(
            a, f"/threads/{w.idle}/messages", {"role": "user", "content": m}
        ),
        lambda w, m, r: messages_with(w, w.idle, m) == 1,
        lambda w: set(),
        api=True,
    ),
    Action(
        "API: modify a thread's metadata",
        lambda d, a, w, m: api_post(a, f"/threads/{w.idle}", {"metadata": {"k": m}}),
        lambda w, m, r: w.store.get_thread(w.idle).metadata == {"k": m},
        lambda w: {("thread", w.idle)},
        api=True,
    ),
    Action(
        "API: create a run",
        lambda d, a, w, m: api_post(a, f"/threads/{w.idle}/runs", {"assistant_id": w.assistant}),
        lambda w, m, r: w.store.get_run(w.idle, r.json()["id"]).status is RunStatus.QUEUED,
        lambda w: set(),
        api=True,
        reset=end_active_run,
    ),
    Action(
        "API: cancel a run",
        lambda d, a, w, m: api_post(a, f"/threads/{w.busy}/runs/{w.queued}/cancel", {}),
        lambda w, m, r: w.store.get_run(w.busy, w.queued).status is RunStatus.CANCELLED,
        lambda w: {("run", w.busy, w.queued), ("steps", w.busy, w.queued)},
        api=True,
        reset=queue_again,
    ),
]


def was_stored(action: Action, world: World, marker: str, response: Any) -> bool:
    try:
        return action.stored(world, marker, response)
    except (KeyError, ValueError, TypeError):
        return bool(threads_with(world, "marker", marker))  # the API thread: by metadata


def is_storage_error(response: Any, api: bool) -> bool:
    if response.status_code != 503 or response.get("Retry-After") != "10":
        return False
    if api:
        error = response.json()["error"]
        return error["type"] == "server_error" and "storage" in error["message"]
    return "<h1>Storage unavailable</h1>" in response.content.decode()


def faults_for(counts: dict[str, int]) -> list[Fault]:
    """The first, a middle and the last call of each op, failing from then on (ENOSPC
    and EIO in turn), and the middle one failing once."""
    chosen = []
    for op in OPS:
        count = counts[op]
        if count == 0:
            continue
        positions = sorted({1, (count + 1) // 2, count})
        for index, nth in enumerate(positions):
            error = errno.ENOSPC if index % 2 == 0 else errno.EIO
            chosen.append(Fault(op, error, nth, sticky=True))
        chosen.append(Fault(op, errno.EIO, (count + 1) // 2, sticky=False))
    return chosen


@pytest.fixture
def clients(django_user_model, settings, tmp_path: Path) -> tuple[Client, Client]:
    settings.THREADSITE_API_KEYS = [API_KEY]
    settings.THREADSITE_API_KEYS_FILE = tmp_path / "api_keys"
    staff = django_user_model.objects.create_user(username="ada", password="x", is_staff=True)
    dashboard = Client()
    dashboard.force_login(staff)
    return dashboard, Client()


def use_world(settings: Any, root: Path) -> World:
    world = build_world(root)
    settings.THREADSITE_STORE_ROOT = root / "threads"
    settings.THREADSITE_ASSISTANTS_ROOT = root / "assistants"
    services.clear_store_cache()
    return world


def check_case(
    action: Action,
    world: World,
    label: str,
    marker: str,
    response: Any,
    before: Fingerprint,
    stored_anyway: list[str],
) -> list[str]:
    """What went wrong with one faulty request (nothing, one hopes)."""
    wrong = []
    if response.status_code < 400:
        if not action.stored(world, marker, response):
            wrong.append(f"{label}: acknowledged ({response.status_code}) but not stored")
    elif not is_storage_error(response, action.api):
        wrong.append(f"{label}: answered {response.status_code}: {response.content[:200]!r}")
    elif was_stored(action, world, marker, response):
        stored_anyway.append(label)  # told "unavailable", yet it was kept
    after = fingerprint(world.store)
    may_change = action.changes(world)
    for key, value in before.items():
        if key not in after:
            wrong.append(f"{label}: {key} lost")
        elif key[0] == "messages":  # a log only grows
            if after[key][: len(value)] != value:
                wrong.append(f"{label}: {key} changed")
        elif key not in may_change and after[key] != value:
            wrong.append(f"{label}: {key} changed")
    problems = world.store.check().problems
    if problems:
        wrong.append(f"{label}: left the store with {problems}")
    return wrong


@pytest.mark.django_db
def test_failing_disks_never_lose_or_fake_a_change(
    clients: tuple[Client, Client], settings: Any, tmp_path: Path
) -> None:
    dashboard, api = clients
    tried = successes = 0
    stored_anyway: list[str] = []
    wrong: list[str] = []
    for action_no, action in enumerate(ACTIONS):
        rehearsal = tmp_path / f"a{action_no}-rehearsal"
        world = use_world(settings, rehearsal)
        with bad_disk(rehearsal) as disk, disk.failing(None):
            response = action.send(dashboard, api, world, "rehearsal")
        assert response.status_code < 400, (action.name, response.status_code)
        for case_no, fault in enumerate(faults_for(dict(disk.calls))):
            root = tmp_path / f"a{action_no}-{case_no}"
            world = use_world(settings, root)
            before = fingerprint(world.store)
            marker = f"marker-{action_no}-{case_no}"
            label = f"{action.name}, {fault.op} failing ({errno.errorcode[fault.error]}) "
            label += f"{'from' if fault.sticky else 'at'} call {fault.nth}"
            with bad_disk(root) as disk, disk.failing(fault):
                response = action.send(dashboard, api, world, marker)
            tried += 1
            assert disk.failed, f"{label}: the fault never fired"
            successes += response.status_code < 400
            wrong += check_case(action, world, label, marker, response, before, stored_anyway)
            # The disk works again: so does the same change.
            services.clear_store_cache()
            action.reset(world)
            again = action.send(dashboard, api, world, marker + "-again")
            if again.status_code >= 400 or not action.stored(world, marker + "-again", again):
                wrong.append(f"{label}: still failing once the disk works ({again.status_code})")
    record_figures(
        "bad_disks_in_process",
        faulty_requests=tried,
        succeeded_despite_fault=successes,
        answered_503=tried - successes,
        answered_503_but_stored=len(stored_anyway),
        answered_503_but_stored_cases=stored_anyway,
        actions=len(ACTIONS),
        problems=len(wrong),
    )
    assert not wrong, f"{len(wrong)} of {tried} faulty requests went wrong:\n" + "\n".join(wrong)


# --------------------------------------------------------------- over HTTP, live


def test_a_live_server_answers_503_while_the_disk_fails_and_recovers(tmp_path: Path) -> None:
    control = tmp_path / "fault.json"
    options = {"env": {"THREADSITE_TEST_FAULT_FILE": str(control)}, "web_workers": 1}
    with running_site(tmp_path / "site", wsgi_app="faulty_wsgi:application", **options) as site:
        api = api_client(site.base_url)
        dashboard = signed_in(site.base_url)
        thread = api.api("POST", "/threads", {"messages": [{"role": "user", "content": "hi"}]})
        thread_id = thread.json()["id"]
        store = site.store
        before = [m.id for m in store.list_messages(thread_id)]
        cases = [
            ("fsync", errno.ENOSPC, "API message"),
            ("write", errno.EIO, "dashboard message"),
            ("rename", errno.ENOSPC, "dashboard metadata"),
            ("close", errno.EIO, "API metadata"),
        ]
        tried = 0
        for op, error, what in cases:
            control.write_text(json.dumps({"op": op, "error": error, "nth": 1, "sticky": True}))
            reply = send_live(api, dashboard, what, thread_id, f"{what} on a bad disk")
            tried += 1
            assert reply.status == 503, (what, op, reply.status, reply.text[:300])
            assert reply.headers.get("retry-after") == "10"
            if what.startswith("API"):
                assert "storage" in reply.json()["error"]["message"]
            else:
                assert "<h1>Storage unavailable</h1>" in reply.text
            if op != "close":  # reading still works while writes fail
                page = dashboard.get(f"/threads/{thread_id}/")
                assert page.status == 200, (op, page.status)
            control.write_text("")
            again = send_live(api, dashboard, what, thread_id, f"{what} once the disk works")
            assert again.status in (200, 302), (what, again.status)
        texts = [m.text for m in store.list_messages(thread_id)]
        assert [m.id for m in store.list_messages(thread_id)][: len(before)] == before
        assert "API message on a bad disk" not in texts
        assert "dashboard message on a bad disk" not in texts
        assert "API message once the disk works" in texts
        assert "dashboard message once the disk works" in texts
        assert store.get_thread(thread_id).metadata == {"k": "API metadata once the disk works"}
        assert not store.check().problems
    record_figures("bad_disks_live", faulty_requests=tried, answered_503=tried, recovered=tried)


def send_live(api: Any, dashboard: Any, what: str, thread_id: str, text: str) -> Any:
    if what == "API message":
        return api.api("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": text})
    if what == "dashboard message":
        return dashboard.form(f"/threads/{thread_id}/messages", {"text": text})
    if what == "dashboard metadata":
        page = dashboard.get(f"/threads/{thread_id}/")
        version = re.search(r'name="version" value="([^"]+)"', page.text)
        assert version is not None
        fields = {"rows": "4", "key_0": "k", "value_0": text, "version": version.group(1)}
        return dashboard.form(f"/threads/{thread_id}/metadata", fields)
    return api.api("POST", f"/threads/{thread_id}", {"metadata": {"k": text}})
