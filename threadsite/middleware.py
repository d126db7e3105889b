"""Store errors become clear pages: a missing record is a 404, a failing disk a 503."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

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
