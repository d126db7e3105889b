"""Threads: the list, one thread with its messages, new threads, exports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.exceptions import BadRequest
from django.http import Http404, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET

from stores import InvalidCursor, Thread
from threadsite.services import get_store

from .http import HtmxHttpRequest

THREADS_PER_PAGE = 50
METADATA_PAIRS_SHOWN = 3


@dataclass(frozen=True)
class ThreadRow:
    id: str
    created: datetime
    metadata: list[tuple[str, str]]
    metadata_hidden: int


def _thread_row(thread: Thread) -> ThreadRow:
    pairs = list(thread.metadata.items())
    return ThreadRow(
        id=thread.id,
        created=datetime.fromtimestamp(thread.created_at, tz=UTC),
        metadata=pairs[:METADATA_PAIRS_SHOWN],
        metadata_hidden=max(0, len(pairs) - METADATA_PAIRS_SHOWN),
    )


@require_GET
def thread_list(request: HtmxHttpRequest) -> TemplateResponse:
    cursor = request.GET.get("cursor") or None
    try:
        page = get_store().list_threads(limit=THREADS_PER_PAGE, cursor=cursor)
    except InvalidCursor:
        raise BadRequest("The page cursor is not valid.") from None
    return TemplateResponse(
        request,
        "threads/list.html",
        {
            "rows": [_thread_row(thread) for thread in page.items],
            "next_cursor": page.next_cursor,
            "is_first_page": cursor is None,
        },
    )


def _todo(*args: object, **kwargs: object) -> HttpResponse:
    raise Http404("Not built yet.")


thread_create = thread_detail = thread_messages = thread_metadata = _todo
export_json = export_markdown = _todo
