"""Editing a thread's metadata."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from stores import new_thread

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def thread(thread_store):
    return thread_store.create_thread(new_thread({"ticket": "1234", "customer": "acme"}))


def metadata_url(thread_id: str) -> str:
    return reverse("thread-metadata", args=[thread_id])


def form_data(client, thread_id: str) -> dict[str, str]:
    """What the edit form on the thread page would post, unchanged."""
    html = client.get(reverse("thread-detail", args=[thread_id])).content.decode()
    form = html[html.index(f'action="{metadata_url(thread_id)}"') :]
    form = form[: form.index("</form>")]
    data = {}
    for tag in re.findall(r"<input [^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag).group(1)
        value = re.search(r'value="([^"]*)"', tag)
        data[name] = value.group(1) if value else ""
    data.pop("csrfmiddlewaretoken", None)
    return data


def test_the_edit_form_shows_the_pairs_and_spare_rows(staff_client, thread):
    data = form_data(staff_client, thread.id)

    assert data["rows"] == "4"
    assert (data["key_0"], data["value_0"]) == ("ticket", "1234")
    assert (data["key_1"], data["value_1"]) == ("customer", "acme")
    assert data["key_2"] == data["key_3"] == ""
    assert len(data["version"]) == 16


def test_saving_replaces_the_metadata(staff_client, thread, thread_store):
    data = form_data(staff_client, thread.id)
    data.update(key_1="", value_1="", key_2="email", value_2="a@example.com", value_0="5678")

    response = staff_client.post(metadata_url(thread.id), data)

    assert response.status_code == 302
    assert response["Location"] == reverse("thread-detail", args=[thread.id]) + "#metadata"
    assert thread_store.get_thread(thread.id).metadata == {
        "ticket": "5678",
        "email": "a@example.com",
    }
    page = staff_client.get(response["Location"]).content.decode()
    assert "Metadata saved." in page
    assert "<dt>email</dt><dd>a@example.com" in page


def test_saving_with_htmx_answers_the_metadata_section(staff_client, thread, thread_store):
    data = form_data(staff_client, thread.id)
    data.update(value_1="<script>x</script>")

    response = staff_client.post(metadata_url(thread.id), data, headers=HTMX)

    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="metadata"')
    assert "Metadata saved." in html
    assert "<dt>customer</dt><dd>&lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>x</script>" not in html
    assert '<details class="edit-metadata">' in html  # closed again
    assert thread_store.get_thread(thread.id).metadata["customer"] == "<script>x</script>"
    new_version = re.search(r'name="version" value="([^"]+)"', html).group(1)
    assert new_version != data["version"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"key_2": "k" * 65, "value_2": "v"}, "Keys can be at most 64 characters."),
        ({"key_2": "k", "value_2": "v" * 513}, "Values can be at most 512 characters."),
        ({"key_2": "", "value_2": "orphan"}, "Give this value a key, or clear the value."),
        ({"key_2": "ticket", "value_2": "again"}, "The key “ticket” is used twice."),
    ],
)
def test_invalid_metadata_is_refused_in_place(staff_client, thread, thread_store, change, error):
    data = {**form_data(staff_client, thread.id), **change}

    response = staff_client.post(metadata_url(thread.id), data, headers=HTMX)

    assert response.status_code == 200
    html = response.content.decode()
    assert error in html
    assert '<details class="edit-metadata" open>' in html
    assert 'aria-invalid="true"' in html
    assert thread_store.get_thread(thread.id).metadata == {"ticket": "1234", "customer": "acme"}
    plain = staff_client.post(metadata_url(thread.id), data)
    assert plain.status_code == 400
    assert error in plain.content.decode()


def test_at_most_16_pairs(staff_client, thread_store):
    crowded = thread_store.create_thread(new_thread({f"k{i}": "v" for i in range(17)}))
    data = form_data(staff_client, crowded.id)
    assert data["rows"] == "17"  # every existing pair can be seen and removed

    response = staff_client.post(metadata_url(crowded.id), data)

    assert response.status_code == 400
    assert "at most 16 metadata pairs; this has 17" in response.content.decode()
    data["key_16"] = data["value_16"] = ""
    assert staff_client.post(metadata_url(crowded.id), data).status_code == 302
    assert len(thread_store.get_thread(crowded.id).metadata) == 16


def test_add_a_row_keeps_what_was_typed_and_saves_nothing(staff_client, thread, thread_store):
    data = {**form_data(staff_client, thread.id), "key_3": "typed", "add_row": "1"}

    response = staff_client.post(metadata_url(thread.id), data, headers=HTMX)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="rows" value="5"' in html
    assert 'name="key_4"' in html
    assert 'name="key_3" value="typed"' in html
    assert "Please fix" not in html
    assert thread_store.get_thread(thread.id).metadata == {"ticket": "1234", "customer": "acme"}


def test_a_change_made_meanwhile_is_not_overwritten_silently(staff_client, thread, thread_store):
    data = form_data(staff_client, thread.id)
    thread_store.update_thread_metadata(thread.id, {"ticket": "9999"})
    data.update(value_1="mine")

    response = staff_client.post(metadata_url(thread.id), data)

    assert response.status_code == 400
    html = response.content.decode()
    assert "Someone changed the metadata of this thread while you were editing it" in html
    assert thread_store.get_thread(thread.id).metadata == {"ticket": "9999"}
    # Saving again is a deliberate overwrite.
    data["version"] = re.search(r'name="version" value="([^"]+)"', html).group(1)
    assert staff_client.post(metadata_url(thread.id), data).status_code == 302
    assert thread_store.get_thread(thread.id).metadata == {"ticket": "1234", "customer": "mine"}


def test_metadata_needs_a_csrf_token(staff_user, thread, thread_store):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)

    response = client.post(metadata_url(thread.id), {"rows": "4", "key_0": "x", "value_0": "y"})

    assert response.status_code == 403
    assert thread_store.get_thread(thread.id).metadata["ticket"] == "1234"


def test_metadata_is_post_only(staff_client, thread):
    assert staff_client.get(metadata_url(thread.id)).status_code == 405


def test_anonymous_posts_are_sent_to_sign_in(client, thread):
    response = client.post(metadata_url(thread.id), {"rows": "4"})

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("thread_id", ["thread_0123456789abcdef0123456789abcdef", "c" * 300])
def test_unknown_threads_are_404(staff_client, thread_id):
    assert staff_client.post(metadata_url(thread_id), {"rows": "4"}).status_code == 404
