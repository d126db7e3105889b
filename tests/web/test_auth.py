from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_thread_list_redirects_anonymous_visitors_to_login(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"


def test_login_page_has_a_labelled_form(client):
    response = client.get(reverse("login"))

    assert response.status_code == 200
    html = response.content.decode()
    assert '<label for="id_username">Username</label>' in html
    assert '<label for="id_password">Password</label>' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_signing_in_lands_on_the_page_asked_for(client, staff_user, password):
    response = client.post(
        reverse("login"), {"username": "ada", "password": password, "next": "/threads/"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/threads/"


def test_signing_in_without_a_next_page_lands_on_the_overview(client, staff_user, password):
    response = client.post(reverse("login"), {"username": "ada", "password": password})

    assert response.status_code == 302
    assert response["Location"] == reverse("overview") == "/"
    assert client.get("/").wsgi_request.user == staff_user


def test_signing_in_never_redirects_off_site(client, staff_user, password):
    response = client.post(
        reverse("login"),
        {"username": "ada", "password": password, "next": "https://evil.example/"},
    )

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_a_wrong_password_is_refused_with_a_message(client, staff_user):
    response = client.post(reverse("login"), {"username": "ada", "password": "nope"})

    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()
    assert not response.context["user"].is_authenticated


def test_signing_out_ends_the_session(staff_client):
    response = staff_client.post(reverse("logout"))

    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert staff_client.get("/").status_code == 302


def test_pages_carry_the_csrf_header_for_htmx(staff_client):
    html = staff_client.get("/").content.decode()

    assert """hx-headers='{"x-csrftoken": \"""" in html
    assert "/static/django_htmx/htmx-2.min.js" in html


def test_a_form_without_its_csrf_token_gets_a_clear_page(staff_user, password):
    client = Client(enforce_csrf_checks=True)

    response = client.post(reverse("login"), {"username": "ada", "password": password})

    assert response.status_code == 403
    html = response.content.decode()
    assert "<h1>Form expired</h1>" in html
    assert "CSRF verification failed" not in html


@pytest.mark.parametrize(
    ("page", "back_to"),
    [
        ("http://testserver/threads/thread_a/runs/run_b/", "/threads/thread_a/runs/run_b/"),
        ("http://testserver/threads/?q=ticket%3D7", "/threads/%3Fq%3Dticket%253D7"),
        ("http://elsewhere.example/threads/", "/"),  # never back to another site
        ("http://testserver//elsewhere.example/x", "/"),  # nor to one named as a path
        ("", "/"),
    ],
)
def test_an_htmx_request_whose_session_ended_sends_the_page_to_sign_in(client, page, back_to):
    """A polling page whose session ended (signed out elsewhere, account deactivated)
    must not swap the sign-in page into itself: the whole page goes there instead."""
    headers = {"HX-Request": "true"}
    if page:
        headers["HX-Current-URL"] = page

    response = client.get("/threads/thread_a/runs/run_b/", headers=headers)

    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/accounts/login/?next={back_to}"
    assert response.content == b""
    assert client.get("/threads/thread_a/runs/run_b/").status_code == 302  # without htmx
