from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from stores import new_thread

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

    match = re.search(r'<time datetime="([^"]+)">([^<]+) UTC</time>', html)
    assert match is not None
    expected = datetime.fromtimestamp(thread.created_at, tz=UTC)
    assert match.group(1) == expected.isoformat()
    assert match.group(2) == expected.strftime("%Y-%m-%d %H:%M:%S")


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
