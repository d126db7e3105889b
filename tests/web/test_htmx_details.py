"""`request.htmx`: django-htmx's, answered from the HX-Request header alone."""

from __future__ import annotations

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from threadsite.middleware import HtmxMiddleware


def through_middleware(request: HttpRequest) -> HttpRequest:
    HtmxMiddleware(lambda request: HttpResponse())(request)
    return request


@pytest.mark.parametrize(
    ("headers", "is_htmx"),
    [
        ({"HX-Request": "true"}, True),
        ({}, False),
        ({"HX-Request": "false"}, False),
        ({"HX-Requested-With": "true"}, False),
    ],
)
def test_request_htmx_says_whether_htmx_asked(
    rf: RequestFactory, headers: dict[str, str], is_htmx: bool
) -> None:
    request = through_middleware(rf.get("/", headers=headers))

    assert bool(request.htmx) is is_htmx  # type: ignore[attr-defined]


def test_the_other_htmx_details_are_django_htmxs(rf: RequestFactory) -> None:
    headers = {"HX-Request": "true", "HX-Current-URL": "http://testserver/threads/?q=x"}
    request = through_middleware(rf.get("/", headers=headers))

    assert request.htmx.current_url_abs_path == "/threads/?q=x"  # type: ignore[attr-defined]
    assert request.htmx.target is None  # type: ignore[attr-defined]
