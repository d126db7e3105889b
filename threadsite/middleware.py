"""Store errors become clear pages: a missing record is a 404, a failing disk a 503; an
htmx request without a signed-in user sends the whole page to the sign-in page; and
`request.htmx` is answered from the one header it needs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx import middleware as htmx_middleware
from django_htmx.http import HttpResponseClientRedirect

from stores import RunNotFound, RunStepNotFound, StoreIOError, ThreadNotFound

log = logging.getLogger("threadsite.web")

NOT_FOUND = (ThreadNotFound, RunNotFound, RunStepNotFound)


class StoreErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, NOT_FOUND):
            body = render_to_string("404.html", {"detail": str(exception)}, request=request)
            return HttpResponse(body, status=404)
        if isinstance(exception, StoreIOError):
            log.error("storage failure on %s: %s", request.path, exception)
            body = render_to_string("503.html", {}, request=request)
            response = HttpResponse(body, status=503)
            response["Retry-After"] = "10"
            return response
        return None


class SignInRequiredMiddleware(LoginRequiredMiddleware):
    """Django's LoginRequiredMiddleware, which also serves htmx: a request made by a page
    whose session has ended (signed out elsewhere, the account deactivated) would follow
    the redirect and swap the sign-in page into a part of the page. It gets HX-Redirect
    instead, so the browser goes to the sign-in page and comes back to the page after."""

    def handle_no_permission(self, request: HttpRequest, view_func: Any) -> HttpResponse:
        if request.headers.get("HX-Request") != "true":
            return super().handle_no_permission(request, view_func)
        page = urlsplit(request.headers.get("HX-Current-URL", ""))
        back_to = urlunsplit(("", "", page.path, page.query, ""))
        same_site = page.netloc == request.get_host() and url_has_allowed_host_and_scheme(
            back_to, allowed_hosts={request.get_host()}
        )
        login = redirect_to_login(
            back_to if same_site and back_to.startswith("/") else "/",
            resolve_url(self.get_login_url(view_func)),
            self.get_redirect_field_name(view_func),
        )
        return HttpResponseClientRedirect(login["Location"])


class HtmxDetails(htmx_middleware.HtmxDetails):
    def __bool__(self) -> bool:
        # django-htmx's builds request.headers (a copy of every header) to answer this,
        # and every open run page asks it every second. HX-Request is only ever "true".
        return self.request.META.get("HTTP_HX_REQUEST") == "true"


class HtmxMiddleware(htmx_middleware.HtmxMiddleware):
    """django-htmx's middleware, with the HtmxDetails above as `request.htmx`."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return super().__call__(request)
        request.htmx = HtmxDetails(request)  # type: ignore[attr-defined]
        return self.get_response(request)
