"""The overview: run counts, runs that need attention, worker health."""

from __future__ import annotations

from django.http import Http404, HttpResponse


def _todo(*args: object, **kwargs: object) -> HttpResponse:
    raise Http404("Not built yet.")


overview = _todo
