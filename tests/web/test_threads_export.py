"""Exporting a thread as JSON and as Markdown."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from stores import RunStatus, new_message, new_run, new_step, new_thread

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(thread_store):
    """A thread with 60 messages and two runs, the second with a step."""
    thread = thread_store.create_thread(new_thread({"ticket": "1234", "note": "two\nlines"}))
    for i in range(59):
        thread_store.append_message(thread.id, new_message(thread.id, "user", f"question {i}"))
    failed = thread_store.create_run(
        thread.id, replace(new_run(thread.id), status=RunStatus.FAILED)
    )
    done = thread_store.create_run(thread.id, new_run(thread.id, model="echo"))
    thread_store.claim_run(
        thread_store.queued_runs()[0], worker_id="w1", lease_seconds=30, run_timeout=600
    )
    step = thread_store.append_step(thread.id, done.id, new_step(thread.id, done.id))
    reply = new_message(
        thread.id, "assistant", "Answer <b>one</b>\n\n# not a heading", run_id=done.id
    )
    thread_store.complete_run(thread.id, done.id, reply)
    return thread, failed, done, step, reply


def test_json_export_is_a_download_of_v2_records(staff_client, conversation):
    thread, failed, done, step, reply = conversation

    response = staff_client.get(reverse("thread-export-json", args=[thread.id]))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="{thread.id}.json"'
    document = json.loads(response.content)
    assert document["thread"]["id"] == thread.id
    assert document["thread"]["object"] == "thread"
    assert document["thread"]["metadata"] == {"ticket": "1234", "note": "two\nlines"}
    assert len(document["messages"]) == 60
    assert document["messages"][0]["object"] == "thread.message"
    assert document["messages"][0]["content"][0]["text"]["value"] == "question 0"
    assert document["messages"][-1]["id"] == reply.id
    assert [run["id"] for run in document["runs"]] == [failed.id, done.id]
    assert document["runs"][1]["object"] == "thread.run"
    assert document["runs"][1]["status"] == "completed"
    assert document["runs"][0]["steps"] == []
    [exported_step] = document["runs"][1]["steps"]
    assert exported_step["id"] == step.id
    assert exported_step["object"] == "thread.run.step"
    assert exported_step["step_details"]["message_creation"]["message_id"] == reply.id


def test_markdown_export_is_a_readable_transcript(staff_client, conversation):
    thread, failed, done, _, reply = conversation

    response = staff_client.get(reverse("thread-export-md", args=[thread.id]))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="{thread.id}.md"'
    text = response.content.decode()
    assert text.startswith(f"# Thread {thread.id}\n")
    assert "  - ticket: 1234\n  - note: two lines\n" in text
    assert "### User, " in text
    assert "> question 0\n" in text
    assert "### Assistant, " in text
    assert f"(run {done.id})" in text
    # Message text is quoted, so its own Markdown cannot break the transcript's headings.
    assert "> Answer <b>one</b>\n>\n> # not a heading\n" in text
    assert text.index("question 58") < text.index("Answer <b>one</b>")
    assert f"- {failed.id}: failed, model echo" in text
    assert f"- {done.id}: completed, model echo" in text


def test_an_empty_thread_exports_too(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())

    text = staff_client.get(reverse("thread-export-md", args=[thread.id])).content.decode()
    document = json.loads(staff_client.get(reverse("thread-export-json", args=[thread.id])).content)

    assert "No messages." in text
    assert "No runs." in text
    assert "- Metadata: none" in text
    assert document["messages"] == [] and document["runs"] == []


def test_viewers_may_export(client, django_user_model, thread_store):
    viewer = django_user_model.objects.create_user(username="vic", is_staff=True)
    viewer.groups.add(Group.objects.get_or_create(name="viewers")[0])
    client.force_login(viewer)
    thread = thread_store.create_thread(new_thread())

    assert client.get(reverse("thread-export-json", args=[thread.id])).status_code == 200
    assert client.get(reverse("thread-export-md", args=[thread.id])).status_code == 200


@pytest.mark.parametrize("name", ["thread-export-json", "thread-export-md"])
@pytest.mark.parametrize(
    "thread_id", ["thread_0123456789abcdef0123456789abcdef", "thread_x\x00", "d" * 300]
)
def test_unknown_and_unsafe_ids_are_404(staff_client, name, thread_id):
    assert staff_client.get(reverse(name, args=[thread_id])).status_code == 404


@pytest.mark.parametrize("name", ["thread-export-json", "thread-export-md"])
def test_exports_need_a_sign_in(client, thread_store, name):
    thread = thread_store.create_thread(new_thread())

    response = client.get(reverse(name, args=[thread.id]))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
