"""The thread page: metadata, messages, runs, and its live runs panel."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from stores import RunStatus, new_message, new_run, new_thread

pytestmark = pytest.mark.django_db

MESSAGE_ID = re.compile(r'<li class="msg role-[a-z-]+" id="(msg_[0-9a-f]+)">')


@pytest.fixture
def viewer_client(client, django_user_model):
    viewer = django_user_model.objects.create_user(username="vic", is_staff=True)
    viewer.groups.add(Group.objects.get_or_create(name="viewers")[0])
    client.force_login(viewer)
    return client


def detail_url(thread_id: str) -> str:
    return reverse("thread-detail", args=[thread_id])


def message_ids(html: str) -> list[str]:
    return MESSAGE_ID.findall(html)


def add_run(store, thread_id: str, status: str = "queued"):
    return store.create_run(thread_id, replace(new_run(thread_id), status=RunStatus(status)))


def test_shows_metadata_messages_in_order_with_roles(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread({"ticket": "1234"}))
    question = thread_store.append_message(thread.id, new_message(thread.id, "user", "Hello?"))
    answer = thread_store.append_message(
        thread.id, new_message(thread.id, "assistant", "Hi.\nHow can I help?")
    )

    response = staff_client.get(detail_url(thread.id))

    assert response.status_code == 200
    html = response.content.decode()
    assert f"<h1>Thread <code>{thread.id}</code></h1>" in html
    assert "<dt>ticket</dt><dd>1234" in html
    assert message_ids(html) == [question.id, answer.id]
    assert '<strong class="role">User</strong>' in html
    assert '<strong class="role">Assistant</strong>' in html
    assert '<div class="msg-text">Hi.\nHow can I help?</div>' in html
    assert "No runs yet." in html


def test_message_text_is_escaped(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread({"<k>": "<img src=x onerror=alert(1)>"}))
    thread_store.append_message(
        thread.id, new_message(thread.id, "user", "<script>alert('hi')</script>")
    )

    html = staff_client.get(detail_url(thread.id)).content.decode()

    assert "<script>alert(" not in html
    assert "&lt;script&gt;alert(&#x27;hi&#x27;)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "<k>" not in html


def test_only_the_latest_50_messages_show_with_a_load_earlier_link(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    ids = [
        thread_store.append_message(thread.id, new_message(thread.id, "user", f"m{i}")).id
        for i in range(120)
    ]

    html = staff_client.get(detail_url(thread.id)).content.decode()

    assert message_ids(html) == ids[70:]
    link = re.search(r'<a id="load-earlier-link"[^>]*>Load earlier messages</a>', html).group(0)
    href = re.search(r'href="([^"]+)"', link).group(1)
    assert href.startswith(reverse("thread-messages", args=[thread.id]) + "?before=")
    assert f'hx-get="{href}"' in link
    assert 'hx-target="#message-list"' in link
    assert 'hx-swap="afterbegin"' in link


def test_a_short_thread_has_no_load_earlier_link(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    thread_store.append_message(thread.id, new_message(thread.id, "user", "only one"))

    html = staff_client.get(detail_url(thread.id)).content.decode()

    assert "Load earlier messages" not in html


def test_an_empty_thread_says_so(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())

    html = staff_client.get(detail_url(thread.id)).content.decode()

    assert "No messages yet." in html
    assert "No metadata." in html


def test_runs_are_listed_newest_first_with_badges_and_links(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    older = add_run(thread_store, thread.id, "failed")
    newer = add_run(thread_store, thread.id, "completed")

    html = staff_client.get(detail_url(thread.id)).content.decode()

    assert html.index(newer.id) < html.index(older.id)
    assert f'<a href="{reverse("run-detail", args=[thread.id, newer.id])}">' in html
    assert '<span class="badge status-completed">completed</span>' in html
    assert '<span class="badge status-failed">failed</span>' in html
    assert "A run is active" not in html
    assert "hx-trigger" not in html


def test_messages_link_to_the_run_that_wrote_them(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    run = add_run(thread_store, thread.id, "completed")
    thread_store.append_message(
        thread.id,
        new_message(thread.id, "assistant", "partial", run_id=run.id, status="incomplete"),
    )

    html = staff_client.get(detail_url(thread.id)).content.decode()

    assert f'<a href="{reverse("run-detail", args=[thread.id, run.id])}">run</a>' in html
    assert '<span class="badge status-incomplete">incomplete</span>' in html


def test_an_active_run_is_announced_and_the_runs_panel_polls(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    last = thread_store.append_message(thread.id, new_message(thread.id, "user", "go"))
    run = add_run(thread_store, thread.id, "in_progress")

    html = staff_client.get(detail_url(thread.id)).content.decode()

    assert "A run is active:" in html
    assert (
        f'<a href="{reverse("run-detail", args=[thread.id, run.id])}"><code>{run.id}</code></a>'
        in html
    )
    assert (
        f'<section id="thread-runs" class="panel" aria-labelledby="runs-heading" '
        f'hx-get="{detail_url(thread.id)}?after={last.id}" hx-trigger="every 2s" '
        f'hx-swap="outerHTML"'
    ) in html


def test_staff_get_the_forms(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread({"ticket": "1"}))

    html = staff_client.get(detail_url(thread.id)).content.decode()

    post = reverse("thread-messages", args=[thread.id])
    assert f'<form id="post-form" method="post" action="{post}" hx-post="{post}"' in html
    assert '<label for="post-text">Message</label>' in html
    assert 'maxlength="32000"' in html
    run_create = reverse("run-create", args=[thread.id])
    start = html[html.index(f'action="{run_create}"') :]
    start = start[: start.index("</form>")]
    assert 'method="post"' in html[html.index(f'action="{run_create}"') - 80 :][:120]
    model = re.search(r'<input type="text" name="model"[^>]*>', start).group(0)
    assert 'value="echo"' in model
    assert 'maxlength="256"' in model
    model_id = re.search(r'id="([^"]+)"', model).group(1)
    assert re.search(rf'<label for="{model_id}">Model:?</label>', start)
    assert re.search(r'<textarea name="instructions"[^>]*maxlength="32000"', start)
    assert f'action="{reverse("thread-metadata", args=[thread.id])}"' in html
    assert '<label class="visually-hidden" for="meta-key_0">Key 1</label>' in html
    assert 'name="key_0" value="ticket"' in html


def test_viewers_see_everything_but_no_forms(viewer_client, thread_store):
    thread = thread_store.create_thread(new_thread({"ticket": "1"}))
    thread_store.append_message(thread.id, new_message(thread.id, "user", "visible"))
    add_run(thread_store, thread.id, "completed")

    response = viewer_client.get(detail_url(thread.id))

    assert response.status_code == 200
    html = response.content.decode()
    assert "visible" in html
    assert "<dt>ticket</dt>" in html
    assert "status-completed" in html
    assert 'method="post" action="/threads' not in html
    assert "Post a message" not in html
    assert "Start a run" not in html
    assert "Edit metadata" not in html


def test_export_links_are_offered(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())

    html = staff_client.get(detail_url(thread.id)).content.decode()

    assert f'href="{reverse("thread-export-json", args=[thread.id])}"' in html
    assert f'href="{reverse("thread-export-md", args=[thread.id])}"' in html


@pytest.mark.parametrize(
    "path",
    [
        "/threads/thread_0123456789abcdef0123456789abcdef/",
        "/threads/..%2Fetc/",
        "/threads/thread_x%00/",
        "/threads/" + "a" * 300 + "/",
        "/threads/.threadsite/",
    ],
)
def test_unknown_and_unsafe_ids_are_404(staff_client, settings, path):
    settings.DEBUG = False

    response = staff_client.get(path)

    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.content.decode()


def test_anonymous_visitors_are_sent_to_sign_in(client, thread_store):
    thread = thread_store.create_thread(new_thread())

    response = client.get(detail_url(thread.id))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_the_page_varies_on_hx_request(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())

    response = staff_client.get(detail_url(thread.id))

    assert "HX-Request" in response["Vary"]


# The live runs panel: the same URL answered to htmx.


def poll(client, thread_id: str, after: str = ""):
    return client.get(detail_url(thread_id), {"after": after}, headers={"HX-Request": "true"})


def test_the_runs_fragment_keeps_polling_while_the_run_is_active(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    last = thread_store.append_message(thread.id, new_message(thread.id, "user", "go"))
    add_run(thread_store, thread.id, "queued")

    response = poll(staff_client, thread.id, last.id)

    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="thread-runs"')
    assert "<html" not in html
    assert 'hx-trigger="every 2s"' in html
    assert '<span class="badge status-queued">queued</span>' in html
    assert "hx-swap-oob" not in html


def test_the_runs_fragment_brings_the_reply_and_stops_when_the_run_ends(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    last = thread_store.append_message(thread.id, new_message(thread.id, "user", "ping <b>"))
    run = add_run(thread_store, thread.id, "queued")
    reply = new_message(thread.id, "assistant", "pong <b>", run_id=run.id)
    thread_store.claim_run(
        thread_store.queued_runs()[0], worker_id="w1", lease_seconds=30, run_timeout=600
    )
    thread_store.complete_run(thread.id, run.id, reply)

    response = poll(staff_client, thread.id, last.id)

    assert response.status_code == 286
    html = response.content.decode()
    assert "hx-trigger" not in html
    assert '<span class="badge status-completed">completed</span>' in html
    assert '<ol hx-swap-oob="beforeend:#message-list">' in html
    assert message_ids(html) == [reply.id]
    assert "pong &lt;b&gt;" in html


def test_the_ended_fragment_has_nothing_new_when_the_page_is_up_to_date(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    last = thread_store.append_message(thread.id, new_message(thread.id, "user", "hello"))
    add_run(thread_store, thread.id, "cancelled")

    response = poll(staff_client, thread.id, last.id)

    assert response.status_code == 286
    assert "hx-swap-oob" not in response.content.decode()


def test_the_fragment_for_an_unknown_thread_is_404(staff_client):
    response = poll(staff_client, "thread_0123456789abcdef0123456789abcdef")

    assert response.status_code == 404


def test_viewers_poll_too(viewer_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    add_run(thread_store, thread.id, "in_progress")

    assert poll(viewer_client, thread.id).status_code == 200


# ------------------------------------ the newest messages, kept while the log is unchanged


def test_an_unchanged_threads_messages_are_not_read_again(
    staff_client, thread_store, stats_settle_fast, store_calls
):
    thread = thread_store.create_thread(new_thread())
    for i in range(60):
        thread_store.append_message(thread.id, new_message(thread.id, "user", f"m{i}"))
    time.sleep(stats_settle_fast)
    first = staff_client.get(detail_url(thread.id)).content.decode()
    reads = store_calls("latest_messages")

    again = staff_client.get(detail_url(thread.id)).content.decode()

    assert reads == []
    assert message_ids(again) == message_ids(first) and len(message_ids(again)) == 50
    assert "Load earlier messages" in again


@pytest.mark.parametrize("settled", [False, True], ids=["fresh", "settled"])
def test_a_message_posted_elsewhere_shows_at_the_next_load_and_poll(
    staff_client, thread_store, settings, stats_settle_fast, store_calls, settled
):
    from stores import ThreadStore

    thread = thread_store.create_thread(new_thread())
    last = thread_store.append_message(thread.id, new_message(thread.id, "user", "ping"))
    run = add_run(thread_store, thread.id, "queued")
    if settled:
        time.sleep(stats_settle_fast)
    assert message_ids(staff_client.get(detail_url(thread.id)).content.decode()) == [last.id]
    assert message_ids(poll(staff_client, thread.id, last.id).content.decode()) == []
    if settled:  # the page and its poll were answered without reading the log again
        reads = store_calls("latest_messages")
        staff_client.get(detail_url(thread.id))
        poll(staff_client, thread.id, last.id)
        assert reads == []
    elsewhere = ThreadStore(settings.THREADSITE_STORE_ROOT)  # as another process would

    reply = elsewhere.append_message(
        thread.id, new_message(thread.id, "assistant", "pong", run_id=run.id)
    )

    assert message_ids(poll(staff_client, thread.id, last.id).content.decode()) == [reply.id]
    page = staff_client.get(detail_url(thread.id)).content.decode()
    assert message_ids(page) == [last.id, reply.id]
