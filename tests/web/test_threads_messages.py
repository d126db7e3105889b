"""A thread's messages: earlier pages (GET) and posting a user message (POST)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from django.test import Client
from django.urls import reverse

from stores import RunStatus, new_message, new_run, new_thread

pytestmark = pytest.mark.django_db

MESSAGE_ID = re.compile(r'<li class="msg role-[a-z-]+" id="(msg_[0-9a-f]+)">')
HTMX = {"HX-Request": "true"}


@pytest.fixture
def thread(thread_store):
    return thread_store.create_thread(new_thread())


@pytest.fixture
def long_thread(thread_store):
    """120 messages: m0 (oldest) to m119."""
    thread = thread_store.create_thread(new_thread())
    ids = [
        thread_store.append_message(thread.id, new_message(thread.id, "user", f"m{i}")).id
        for i in range(120)
    ]
    return thread, ids


def messages_url(thread_id: str) -> str:
    return reverse("thread-messages", args=[thread_id])


def earlier_href(html: str) -> str | None:
    match = re.search(r'<a id="load-earlier-link"[^>]* href="([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def message_ids(html: str) -> list[str]:
    return MESSAGE_ID.findall(html)


# Earlier messages


def test_earlier_pages_work_without_javascript(staff_client, long_thread):
    thread, ids = long_thread
    first = staff_client.get(reverse("thread-detail", args=[thread.id])).content.decode()

    second = staff_client.get(earlier_href(first))

    assert second.status_code == 200
    html = second.content.decode()
    assert "<h1>Earlier messages</h1>" in html
    assert message_ids(html) == ids[20:70]
    third = staff_client.get(earlier_href(html)).content.decode()
    assert message_ids(third) == ids[:20]
    assert earlier_href(third) is None
    assert "Back to the latest messages" in third


def test_earlier_messages_for_htmx_are_a_fragment_to_insert_above(staff_client, long_thread):
    thread, ids = long_thread
    first = staff_client.get(reverse("thread-detail", args=[thread.id])).content.decode()

    response = staff_client.get(earlier_href(first), headers=HTMX)

    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    html = response.content.decode()
    assert "<html" not in html
    assert message_ids(html) == ids[20:70]
    # The control is replaced out of band with one for the next older page.
    assert '<div id="load-earlier" class="load-earlier" hx-swap-oob="true">' in html
    assert html.index("hx-swap-oob") > html.index(ids[69])
    last = staff_client.get(earlier_href(html), headers=HTMX).content.decode()
    assert message_ids(last) == ids[:20]
    assert "This is the start of the thread." in last
    assert earlier_href(last) is None


@pytest.mark.parametrize("cursor", ["abc", "-1", "1" * 30, "1e9"])
def test_a_bad_cursor_is_a_clear_400(staff_client, thread, settings, cursor):
    settings.DEBUG = False

    response = staff_client.get(messages_url(thread.id), {"before": cursor})

    assert response.status_code == 400
    html = response.content.decode()
    assert "<h1>Bad request</h1>" in html
    assert "The link to earlier messages is not valid." in html


def test_without_a_cursor_it_goes_to_the_thread(staff_client, thread):
    response = staff_client.get(messages_url(thread.id))

    assert response.status_code == 302
    assert response["Location"] == reverse("thread-detail", args=[thread.id])


@pytest.mark.parametrize(
    "thread_id", ["thread_0123456789abcdef0123456789abcdef", "thread_x\x00", "a" * 300]
)
def test_earlier_messages_of_unknown_or_unsafe_threads_are_404(staff_client, thread_id):
    response = staff_client.get(messages_url(thread_id), {"before": "10"})

    assert response.status_code == 404


def test_viewers_can_read_earlier_messages(client, django_user_model, long_thread):
    thread, ids = long_thread
    client.force_login(django_user_model.objects.create_user(username="vic"))

    response = client.get(messages_url(thread.id), {"before": "999999"})

    assert response.status_code == 200
    assert message_ids(response.content.decode()) == ids[70:]


# Posting


def test_posting_without_javascript_redirects_to_the_thread(staff_client, thread, thread_store):
    response = staff_client.post(messages_url(thread.id), {"text": "Where is my order?"})

    assert response.status_code == 302
    assert response["Location"] == reverse("thread-detail", args=[thread.id]) + "#post-message"
    [message] = thread_store.list_messages(thread.id)
    assert (message.role, message.text) == ("user", "Where is my order?")
    page = staff_client.get(response["Location"]).content.decode()
    assert "Message posted." in page
    assert "Where is my order?" in page


def test_posting_with_htmx_answers_the_new_message_and_a_fresh_form(
    staff_client, thread, thread_store
):
    response = staff_client.post(
        messages_url(thread.id), {"text": "<b>bold</b>\r\nsecond line"}, headers=HTMX
    )

    assert response.status_code == 200
    html = response.content.decode()
    [message] = thread_store.list_messages(thread.id)
    assert message.text == "<b>bold</b>\nsecond line"
    assert html.lstrip().startswith(f'<li class="msg role-user" id="{message.id}">')
    assert "&lt;b&gt;bold&lt;/b&gt;\nsecond line" in html
    assert "<b>bold</b>" not in html
    form = re.search(r'<form id="post-form"[^>]*>', html).group(0)
    assert 'hx-swap-oob="true"' in form
    assert re.search(r"<textarea[^>]*>\s*</textarea>", html)  # cleared
    assert f'name="after" value="{message.id}"' in html
    assert '<p id="post-status" hx-swap-oob="innerHTML">Message posted.</p>' in html
    assert "HX-Retarget" not in response


def test_the_page_targets_the_message_list(staff_client, thread):
    html = staff_client.get(reverse("thread-detail", args=[thread.id])).content.decode()

    form = re.search(r'<form id="post-form"[^>]*>', html).group(0)
    assert 'hx-target="#message-list"' in form
    assert 'hx-swap="beforeend"' in form
    assert '<ol id="message-list" class="message-list">' in html


@pytest.mark.parametrize("text", ["", "   \n  "])
def test_an_empty_message_is_refused_in_place(staff_client, thread, thread_store, text):
    response = staff_client.post(messages_url(thread.id), {"text": text}, headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Retarget"] == "#post-form"
    assert response["HX-Reswap"] == "outerHTML"
    html = response.content.decode()
    assert html.lstrip().startswith('<form id="post-form"')
    assert "Write a message first: it cannot be empty." in html
    assert 'aria-invalid="true"' in html
    assert thread_store.list_messages(thread.id) == []


def test_an_over_long_message_is_refused_and_kept(staff_client, thread, thread_store):
    text = "x" * 32_001

    response = staff_client.post(messages_url(thread.id), {"text": text}, headers=HTMX)

    html = response.content.decode()
    assert "A message can be at most 32,000 characters; this one has 32001." in html
    assert text in html
    assert thread_store.list_messages(thread.id) == []


def test_a_message_of_exactly_the_limit_is_posted(staff_client, thread, thread_store):
    response = staff_client.post(messages_url(thread.id), {"text": "y" * 32_000})

    assert response.status_code == 302
    assert len(thread_store.list_messages(thread.id)[0].text) == 32_000


def test_errors_without_javascript_show_the_thread_page_with_the_form(staff_client, thread):
    response = staff_client.post(messages_url(thread.id), {"text": "z" * 32_001})

    assert response.status_code == 400
    html = response.content.decode()
    assert f"<h1>Thread <code>{thread.id}</code></h1>" in html
    assert "A message can be at most 32,000 characters" in html


def busy_thread(store):
    thread = store.create_thread(new_thread())
    last = store.append_message(thread.id, new_message(thread.id, "user", "first"))
    run = store.create_run(thread.id, replace(new_run(thread.id), status=RunStatus.IN_PROGRESS))
    return thread, last, run


def test_posting_during_a_run_is_refused_with_a_clear_message(staff_client, thread_store):
    thread, last, run = busy_thread(thread_store)

    response = staff_client.post(
        messages_url(thread.id), {"text": "are you there?", "after": last.id}, headers=HTMX
    )

    assert response.status_code == 200
    assert response["HX-Retarget"] == "#post-form"
    html = response.content.decode()
    assert "Not posted: a run is active on this thread" in html
    assert f'href="{reverse("run-detail", args=[thread.id, run.id])}"' in html
    assert "are you there?" in html  # the text is kept
    # The runs panel shows the active run and starts watching it.
    runs_panel = re.search(r'<section id="thread-runs"[^>]*>', html).group(0)
    assert 'hx-swap-oob="true"' in runs_panel
    assert 'hx-trigger="every 2s"' in runs_panel
    assert f"?after={last.id}" in runs_panel
    assert [m.text for m in thread_store.list_messages(thread.id)] == ["first"]


def test_posting_during_a_run_without_javascript_is_a_409_page(staff_client, thread_store):
    thread, _, run = busy_thread(thread_store)

    response = staff_client.post(messages_url(thread.id), {"text": "hello?"})

    assert response.status_code == 409
    html = response.content.decode()
    assert "Not posted: a run is active on this thread" in html
    assert "A run is active:" in html
    assert "hello?" in html


def test_posting_needs_a_csrf_token(staff_user, thread, thread_store):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)

    response = client.post(messages_url(thread.id), {"text": "hi"})

    assert response.status_code == 403
    assert "<h1>Form expired</h1>" in response.content.decode()
    assert thread_store.list_messages(thread.id) == []


def test_posting_with_the_page_csrf_token_works(staff_user, thread, thread_store):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    page = client.get(reverse("thread-detail", args=[thread.id])).content.decode()
    token = re.search(r"hx-headers='\{\"x-csrftoken\": \"([^\"]+)\"\}'", page).group(1)

    response = client.post(
        messages_url(thread.id), {"text": "hi"}, headers={**HTMX, "X-CSRFToken": token}
    )

    assert response.status_code == 200
    assert [m.text for m in thread_store.list_messages(thread.id)] == ["hi"]


def test_anonymous_posts_are_sent_to_sign_in(client, thread, thread_store):
    response = client.post(messages_url(thread.id), {"text": "hi"})

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert thread_store.list_messages(thread.id) == []


@pytest.mark.parametrize(
    "thread_id", ["thread_0123456789abcdef0123456789abcdef", "thread_x\x00", "b" * 300]
)
def test_posting_to_unknown_or_unsafe_threads_is_404(staff_client, thread_id):
    assert staff_client.post(messages_url(thread_id), {"text": "hi"}).status_code == 404


def test_other_methods_are_refused(staff_client, thread):
    assert staff_client.put(messages_url(thread.id)).status_code == 405
