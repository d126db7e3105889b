"""Creating a thread: metadata pairs and an optional first message."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

URL = "/threads/new"


def blank(rows: int = 4) -> dict[str, str]:
    data = {"rows": str(rows), "message": ""}
    for i in range(rows):
        data[f"key_{i}"] = data[f"value_{i}"] = ""
    return data


def test_the_url_is_the_named_one():
    assert reverse("thread-create") == URL


def test_the_form_has_labelled_pairs_and_a_message(staff_client):
    response = staff_client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>New thread</h1>" in html
    for i in range(4):
        assert f'<label class="visually-hidden" for="new-key_{i}">Key {i + 1}</label>' in html
        assert f'<label class="visually-hidden" for="new-value_{i}">Value {i + 1}</label>' in html
    assert 'name="key_4"' not in html
    assert '<label for="new-message">First message (optional)</label>' in html
    assert 'maxlength="32000"' in html
    assert 'maxlength="64"' in html
    assert 'maxlength="512"' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_creating_a_thread_with_metadata_and_a_first_message(staff_client, thread_store):
    data = {
        **blank(),
        "key_0": "ticket",
        "value_0": "1234",
        "key_2": "customer",
        "value_2": "<Acme & Co>",
        "message": "My order never arrived.",
    }

    response = staff_client.post(URL, data)

    assert response.status_code == 302
    [thread] = thread_store.list_threads().items
    assert response["Location"] == reverse("thread-detail", args=[thread.id])
    assert thread.metadata == {"ticket": "1234", "customer": "<Acme & Co>"}
    [message] = thread_store.list_messages(thread.id)
    assert (message.role, message.text) == ("user", "My order never arrived.")
    page = staff_client.get(response["Location"]).content.decode()
    assert "Thread created. Its first message is posted." in page
    assert "&lt;Acme &amp; Co&gt;" in page
    assert "My order never arrived." in page


def test_the_message_is_optional(staff_client, thread_store):
    response = staff_client.post(URL, {**blank(), "message": "   "})

    assert response.status_code == 302
    [thread] = thread_store.list_threads().items
    assert thread.metadata == {}
    assert thread_store.list_messages(thread.id) == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"key_0": "k" * 65}, "Keys can be at most 64 characters."),
        ({"key_0": "k", "value_0": "v" * 513}, "Values can be at most 512 characters."),
        ({"value_1": "lonely"}, "Give this value a key, or clear the value."),
        ({"key_0": "a", "key_1": "a"}, "The key “a” is used twice."),
        ({"message": "m" * 32_001}, "A message can be at most 32,000 characters"),
    ],
)
def test_invalid_input_is_shown_in_place_and_creates_nothing(
    staff_client, thread_store, change, error
):
    response = staff_client.post(URL, {**blank(), **change})

    assert response.status_code == 400
    html = response.content.decode()
    assert error in html
    assert "Please fix the problems marked below." in html
    assert 'aria-invalid="true"' in html
    assert thread_store.list_threads().items == []


def test_add_a_row_redisplays_the_form_with_one_more(staff_client, thread_store):
    data = {**blank(), "key_0": "ticket", "value_0": "1", "message": "kept", "add_row": "1"}

    response = staff_client.post(URL, data)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="rows" value="5"' in html
    assert 'name="key_4"' in html
    assert 'name="key_0" value="ticket"' in html
    assert ">\nkept</textarea>" in html
    assert "Please fix" not in html
    assert thread_store.list_threads().items == []


def test_rows_stop_at_16(staff_client):
    response = staff_client.post(URL, {**blank(16), "add_row": "1"})

    html = response.content.decode()
    assert 'name="rows" value="16"' in html
    assert 'name="key_15"' in html
    assert 'name="key_16"' not in html
    assert "Add a metadata row" not in html


def test_a_forged_row_count_falls_back_to_the_default(staff_client):
    response = staff_client.post(URL, {"rows": "100000", "add_row": "1"})

    assert response.status_code == 200
    assert 'name="rows" value="5"' in response.content.decode()


def test_creating_needs_a_csrf_token(staff_user, thread_store):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)

    response = client.post(URL, blank())

    assert response.status_code == 403
    assert thread_store.list_threads().items == []


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={URL}"
