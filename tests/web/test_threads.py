from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from stores import RunStatus, new_message, new_run, new_thread

pytestmark = pytest.mark.django_db


ROW_ID = re.compile(r"<code>(thread_[0-9a-f]+)</code>")


def listed_ids(response) -> list[str]:
    return ROW_ID.findall(response.content.decode())


def test_an_empty_store_says_so(staff_client):
    response = staff_client.get(reverse("thread-list"))

    assert response.status_code == 200
    assert "No threads yet." in response.content.decode()


def test_threads_are_listed_newest_first_with_their_metadata(staff_client, thread_store):
    older = thread_store.create_thread(new_thread({"customer": "Acme", "topic": "billing"}))
    newer = thread_store.create_thread(new_thread({}))

    response = staff_client.get(reverse("thread-list"))

    assert listed_ids(response) == [newer.id, older.id]
    html = response.content.decode()
    assert "<dt>customer</dt><dd>Acme</dd>" in html
    assert "<dt>topic</dt><dd>billing</dd>" in html
    assert "No threads yet." not in html


def test_created_time_is_shown_in_utc(staff_client, thread_store):
    thread_store.create_thread(new_thread())
    thread = thread_store.list_threads().items[0]

    html = staff_client.get(reverse("thread-list")).content.decode()

    match = re.search(r'<time datetime="([^"]+)">([^<]+)</time>', html)
    assert match is not None
    expected = datetime.fromtimestamp(thread.created_at, tz=UTC)
    assert match.group(1) == expected.isoformat().replace("+00:00", "Z")
    assert match.group(2) == expected.strftime("%Y-%m-%d %H:%M UTC")


def test_long_metadata_is_summarised(staff_client, thread_store):
    metadata = {f"k{i}": "v" * 200 for i in range(5)}
    thread_store.create_thread(new_thread(metadata))

    html = staff_client.get(reverse("thread-list")).content.decode()

    assert "<dt>k0</dt>" in html
    assert "<dt>k2</dt>" in html
    assert "<dt>k3</dt>" not in html
    assert "and 2 more" in html
    assert "v" * 200 not in html


def test_html_in_metadata_is_escaped(staff_client, thread_store):
    thread_store.create_thread(new_thread({"<b>key</b>": "<script>alert(1)</script>"}))

    html = staff_client.get(reverse("thread-list")).content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;key&lt;/b&gt;" in html


def test_older_link_pages_through_all_threads(staff_client, thread_store):
    created = [thread_store.create_thread(new_thread({"n": str(i)})).id for i in range(53)]
    newest_first = created[::-1]

    first = staff_client.get(reverse("thread-list"))
    assert listed_ids(first) == newest_first[:50]
    older = re.search(r'<a href="(\?cursor=[^"]+)" rel="next">Older</a>', first.content.decode())
    assert older is not None
    assert "Newest</a>" not in first.content.decode()

    second = staff_client.get(reverse("thread-list") + older.group(1).replace("&amp;", "&"))
    assert second.status_code == 200
    assert listed_ids(second) == newest_first[50:]
    html = second.content.decode()
    assert 'rel="next"' not in html
    assert f'<a href="{reverse("thread-list")}">Newest</a>' in html


def test_exactly_one_full_page_has_no_older_link(staff_client, thread_store):
    for _ in range(50):
        thread_store.create_thread(new_thread())

    response = staff_client.get(reverse("thread-list"))

    assert len(listed_ids(response)) == 50
    assert 'rel="next"' not in response.content.decode()


def test_a_bad_cursor_is_a_clear_400(staff_client, settings):
    settings.DEBUG = False

    response = staff_client.get(reverse("thread-list"), {"cursor": "not-a-cursor"})

    assert response.status_code == 400
    assert "Bad request" in response.content.decode()


def add_run(store, thread_id: str, status: str):
    return store.create_run(thread_id, replace(new_run(thread_id), status=RunStatus(status)))


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get(reverse("thread-list"))

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={reverse('thread-list')}"


def test_each_row_links_to_its_thread(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())

    html = staff_client.get(reverse("thread-list")).content.decode()

    assert (
        f'<a href="{reverse("thread-detail", args=[thread.id])}"><code>{thread.id}</code></a>'
        in html
    )


def test_rows_preview_the_last_message_with_its_role(staff_client, thread_store):
    quiet = thread_store.create_thread(new_thread())
    chatty = thread_store.create_thread(new_thread())
    thread_store.append_message(chatty.id, new_message(chatty.id, "user", "first question"))
    long_reply = "word " * 60 + "<script>alert(1)</script>"
    thread_store.append_message(chatty.id, new_message(chatty.id, "assistant", long_reply))

    html = staff_client.get(reverse("thread-list")).content.decode()

    chatty_row = html[html.index(chatty.id) : html.index(quiet.id)]
    assert '<strong class="role">Assistant:</strong> word word' in chatty_row
    assert "first question" not in chatty_row
    assert "…" in chatty_row
    assert "<script>alert(1)</script>" not in html
    preview = re.search(r"Assistant:</strong> ([^<]*)", chatty_row).group(1).strip()
    assert len(preview) <= 120
    assert "no messages" in html[html.index(quiet.id) :]


def test_rows_show_the_latest_run_status_as_a_text_badge(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    add_run(thread_store, thread.id, "completed")
    add_run(thread_store, thread.id, "failed")
    idle = thread_store.create_thread(new_thread())

    html = staff_client.get(reverse("thread-list")).content.decode()

    row = html[html.index(thread.id) : html.index("</tr>", html.index(thread.id))]
    assert '<span class="badge status-failed">failed</span>' in row
    assert "status-completed" not in row
    idle_row = html[html.index(idle.id) : html.index("</tr>", html.index(idle.id))]
    assert "no runs" in idle_row


def test_filtering_by_latest_run_status(staff_client, thread_store):
    failed = thread_store.create_thread(new_thread())
    add_run(thread_store, failed.id, "failed")
    recovered = thread_store.create_thread(new_thread())
    add_run(thread_store, recovered.id, "failed")
    add_run(thread_store, recovered.id, "completed")
    thread_store.create_thread(new_thread())

    response = staff_client.get(reverse("thread-list"), {"status": "failed"})

    assert response.status_code == 200
    assert listed_ids(response) == [failed.id]
    html = response.content.decode()
    assert '<option value="failed" selected>failed</option>' in html
    assert "whose latest run is" in html


def test_a_status_filter_without_matches_says_so(staff_client, thread_store):
    thread_store.create_thread(new_thread())

    html = staff_client.get(reverse("thread-list"), {"status": "expired"}).content.decode()

    assert "No threads match." in html


def test_an_unknown_status_is_a_clear_400(staff_client):
    response = staff_client.get(reverse("thread-list"), {"status": "<b>bogus</b>"})

    assert response.status_code == 400
    html = response.content.decode()
    assert "There is no run status called" in html
    assert "<b>bogus</b>" not in html


def test_filtered_lists_page_with_an_offset_cursor(staff_client, thread_store):
    created = []
    for _ in range(53):
        thread = thread_store.create_thread(new_thread())
        add_run(thread_store, thread.id, "failed")
        created.append(thread.id)
    thread_store.create_thread(new_thread())  # no runs: never listed
    newest_first = created[::-1]

    first = staff_client.get(reverse("thread-list"), {"status": "failed"})
    assert listed_ids(first) == newest_first[:50]
    html = first.content.decode()
    older = re.search(r'<a href="(\?[^"]+)" rel="next">Older</a>', html).group(1)
    assert older == "?status=failed&amp;cursor=50"

    second = staff_client.get(reverse("thread-list") + older.replace("&amp;", "&"))
    assert listed_ids(second) == newest_first[50:]
    html = second.content.decode()
    assert 'rel="next"' not in html
    assert f'<a href="{reverse("thread-list")}?status=failed">Newest</a>' in html


def test_a_bad_offset_cursor_is_a_clear_400(staff_client):
    response = staff_client.get(reverse("thread-list"), {"status": "failed", "cursor": "-5"})

    assert response.status_code == 400
    assert "The page link is not valid" in response.content.decode()


def test_finding_an_existing_thread_by_id_opens_it(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())

    response = staff_client.get(reverse("thread-list"), {"q": f"  {thread.id} "})

    assert response.status_code == 302
    assert response["Location"] == reverse("thread-detail", args=[thread.id])


@pytest.mark.parametrize(
    "query", ["thread_0123456789abcdef", "../etc/passwd", "x" * 300, "<i>x</i>"]
)
def test_finding_a_missing_thread_says_so(staff_client, thread_store, query):
    thread_store.create_thread(new_thread())

    response = staff_client.get(reverse("thread-list"), {"q": query})

    assert response.status_code == 200
    html = response.content.decode()
    assert "No thread with the ID" in html
    assert listed_ids(response) == []
    assert "<i>x</i>" not in html


def test_finding_threads_by_a_metadata_pair(staff_client, thread_store):
    first = thread_store.create_thread(new_thread({"ticket": "1234", "customer": "a@example.com"}))
    thread_store.create_thread(new_thread({"ticket": "12345"}))
    second = thread_store.create_thread(new_thread({"ticket": "1234"}))

    response = staff_client.get(reverse("thread-list"), {"q": "ticket = 1234"})

    assert listed_ids(response) == [second.id, first.id]
    html = response.content.decode()
    assert "whose metadata has <strong>ticket</strong> = <strong>1234</strong>" in html
    assert 'value="ticket = 1234"' in html
    by_email = staff_client.get(reverse("thread-list"), {"q": "customer=a@example.com"})
    assert listed_ids(by_email) == [first.id]


def test_metadata_links_search_by_exact_key_and_value(staff_client, thread_store):
    odd = thread_store.create_thread(new_thread({"a=b": " spaced "}))
    thread_store.create_thread(new_thread({"a": "b= spaced"}))

    response = staff_client.get(reverse("thread-list"), {"key": "a=b", "value": " spaced "})

    assert listed_ids(response) == [odd.id]


def test_metadata_search_and_status_filter_combine(staff_client, thread_store):
    failed = thread_store.create_thread(new_thread({"team": "red"}))
    add_run(thread_store, failed.id, "failed")
    ok = thread_store.create_thread(new_thread({"team": "red"}))
    add_run(thread_store, ok.id, "completed")

    response = staff_client.get(reverse("thread-list"), {"q": "team=red", "status": "failed"})

    assert listed_ids(response) == [failed.id]


def test_a_metadata_search_without_a_key_is_a_clear_400(staff_client):
    response = staff_client.get(reverse("thread-list"), {"q": "=1234"})

    assert response.status_code == 400
    assert "key=value" in response.content.decode()


def test_a_metadata_search_without_matches_says_so(staff_client, thread_store):
    thread_store.create_thread(new_thread({"ticket": "1"}))

    response = staff_client.get(reverse("thread-list"), {"q": "ticket=2"})

    assert listed_ids(response) == []
    assert "No threads match." in response.content.decode()


def test_the_page_polls_while_a_shown_run_is_active(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    add_run(thread_store, thread.id, "in_progress")

    response = staff_client.get(reverse("thread-list"), {"status": "in_progress"})

    html = response.content.decode()
    assert response["Vary"] == "HX-Request" or "HX-Request" in response["Vary"]
    assert (
        '<tbody id="thread-rows" hx-get="/threads/?status=in_progress" hx-trigger="every 2s"'
        in html
    )


def test_the_page_does_not_poll_when_every_run_has_ended(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    add_run(thread_store, thread.id, "completed")

    html = staff_client.get(reverse("thread-list")).content.decode()

    assert "hx-trigger" not in html


def test_the_rows_fragment_keeps_polling_while_a_run_is_active(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    add_run(thread_store, thread.id, "queued")

    response = staff_client.get(reverse("thread-list"), headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    html = response.content.decode()
    assert html.lstrip().startswith('<tbody id="thread-rows"')
    assert "<html" not in html
    assert 'hx-trigger="every 2s"' in html
    assert '<span class="badge status-queued">queued</span>' in html


def test_the_rows_fragment_answers_286_once_every_shown_run_has_ended(staff_client, thread_store):
    thread = thread_store.create_thread(new_thread())
    run = add_run(thread_store, thread.id, "in_progress")
    thread_store.update_run_status(thread.id, run.id, "completed")

    response = staff_client.get(reverse("thread-list"), headers={"HX-Request": "true"})

    assert response.status_code == 286
    html = response.content.decode()
    assert '<span class="badge status-completed">completed</span>' in html
    assert "hx-trigger" not in html


def test_viewers_see_the_list_without_the_new_thread_link(client, thread_store, django_user_model):
    thread = thread_store.create_thread(new_thread())
    viewer = django_user_model.objects.create_user(username="vic", is_staff=True)
    viewer.groups.add(Group.objects.get_or_create(name="viewers")[0])
    client.force_login(viewer)

    html = client.get(reverse("thread-list")).content.decode()

    assert thread.id in html
    assert reverse("thread-create") not in html
    assert "read only" in html


def test_staff_see_the_new_thread_link(staff_client):
    html = staff_client.get(reverse("thread-list")).content.decode()

    assert f'<a href="{reverse("thread-create")}"' in html


def test_the_list_is_read_only(staff_client):
    assert staff_client.post(reverse("thread-list")).status_code == 405
    assert Client().get(reverse("thread-list")).status_code == 302
