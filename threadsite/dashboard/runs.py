"""Runs: start one, watch it live, cancel it."""

from __future__ import annotations

from django.http import Http404, HttpResponse


def _todo(*args: object, **kwargs: object) -> HttpResponse:
    raise Http404("Not built yet.")


run_create = run_detail = run_cancel = _todo
