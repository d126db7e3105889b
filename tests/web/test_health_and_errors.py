from __future__ import annotations

import pytest
from django.test import RequestFactory
from django.views.defaults import server_error


def test_healthz_answers_ok_without_login(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.content == b"ok"
    assert response["Content-Type"].startswith("text/plain")
    assert "no-cache" in response["Cache-Control"]


def test_healthz_only_answers_get(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_unknown_page_is_a_clear_404_without_debug_details(staff_client, settings):
    settings.DEBUG = False

    response = staff_client.get("/no/such/page")

    assert response.status_code == 404
    html = response.content.decode()
    assert "<h1>Page not found</h1>" in html
    assert "Traceback" not in html
    assert "URLconf" not in html
    assert "/no/such/page" not in html


def test_server_error_page_is_plain_and_needs_no_context():
    response = server_error(RequestFactory().get("/"))

    assert response.status_code == 500
    html = response.content.decode()
    assert "<h1>Something went wrong</h1>" in html
    assert "Traceback" not in html
