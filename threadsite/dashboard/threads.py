"""Threads: the list, one thread with its messages, new threads, exports."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator, slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HTMX_STOP_POLLING, reswap, retarget

from stores import (
    Catalog,
    FilesVersion,
    InvalidCursor,
    Page,
    Run,
    RunStatus,
    Thread,
    ThreadBusy,
    ThreadMessage,
    ThreadNotFound,
    ThreadStore,
    is_safe_id,
    new_message,
    new_thread,
)
from threadsite.services import get_store
from threadsite.templatetags.threads_extras import role_label, utc

from .forms import MessageForm, MetadataForm, NewThreadForm
from .http import HtmxHttpRequest, keep_newest
from .permissions import writer_required
from .runs_forms import StartRunForm

THREADS_PER_PAGE = 50
MESSAGES_PER_PAGE = 50
RUNS_SHOWN = 20
KEPT_THREADS = 64  # threads whose newest messages a process keeps, read and formatted
METADATA_PAIRS_SHOWN = 3
METADATA_VALUE_CHARS = 80  # a longer value is cut, with an ellipsis
PREVIEW_CHARS = 120
RUN_STATUSES = [status.value for status in RunStatus]


# --------------------------------------------------------------------------- list


@dataclass(frozen=True)
class ThreadRow:
    id: str
    created: datetime
    metadata: list[tuple[str, str]]
    metadata_hidden: int
    last_role: str | None
    last_preview: str
    latest_status: RunStatus | None
    # Formatted once here: the list shows 50 rows, and template filters cost far more
    # per call than the same Python.
    created_iso: str = ""
    created_text: str = ""
    metadata_shown: list[tuple[str, str]] = field(default_factory=list)
    role_text: str = ""

    @property
    def live(self) -> bool:
        return self.latest_status is not None and not self.latest_status.is_terminal


@dataclass(frozen=True)
class Search:
    """What the list is narrowed to: a metadata pair and/or a latest-run status."""

    key: str | None = None
    value: str | None = None
    status: str | None = None

    @property
    def by_catalog(self) -> bool:
        return self.key is not None or self.status is not None


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1].rstrip() + "…"


def _shown_value(value: str) -> str:
    """What `truncatechars:80` shows, without its cost for the usual short ASCII value."""
    if len(value) <= METADATA_VALUE_CHARS and value.isascii():
        return value
    return Truncator(value).chars(METADATA_VALUE_CHARS)


def _thread_row(store: ThreadStore, thread: Thread, latest: RunStatus | None) -> ThreadRow:
    pairs = list(thread.metadata.items())
    last = store.last_message(thread.id)
    created = datetime.fromtimestamp(thread.created_at, tz=UTC)
    shown = pairs[:METADATA_PAIRS_SHOWN]
    return ThreadRow(
        id=thread.id,
        created=created,
        metadata=shown,
        metadata_hidden=max(0, len(pairs) - METADATA_PAIRS_SHOWN),
        last_role=last.role if last else None,
        last_preview=_preview(last.text) if last else "",
        latest_status=latest,
        created_iso=created.isoformat().replace("+00:00", "Z"),
        created_text=created.strftime("%Y-%m-%d %H:%M UTC"),
        metadata_shown=[(key, _shown_value(value)) for key, value in shown],
        role_text=role_label(last.role) if last else "",
    )


def _latest_status(store: ThreadStore, catalog: Catalog, thread_id: str) -> RunStatus | None:
    summary = catalog.threads.get(thread_id)
    if summary is not None:
        return summary.latest_run.status if summary.latest_run else None
    run = store.latest_run(thread_id)  # not in the catalog yet: ask the records
    return run.status if run else None


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 9):
        raise InvalidCursor(cursor)
    return int(cursor)


def _bad_request(request: HtmxHttpRequest, message: str) -> TemplateResponse:
    return TemplateResponse(request, "threads/bad_request.html", {"message": message}, status=400)


@require_GET
@vary_on_headers("HX-Request")
def thread_list(request: HtmxHttpRequest) -> HttpResponse:
    store = get_store()
    query = request.GET.get("q", "").strip()
    status = request.GET.get("status", "").strip()
    cursor = request.GET.get("cursor") or None
    if status and status not in RUN_STATUSES:
        return _bad_request(request, f"There is no run status called “{status}”.")

    key: str | None = None
    value: str | None = None
    not_found_id = ""
    if "key" in request.GET:  # links from a thread's metadata: an exact pair
        key, value = request.GET["key"], request.GET.get("value", "")
    elif "=" in query:
        key, _, value = (part.strip() for part in query.partition("="))
        if not key:
            return _bad_request(request, "Type the metadata search as key=value, e.g. ticket=1234.")
    elif query:
        try:
            thread = store.get_thread(query)
        except ThreadNotFound:
            not_found_id = query
        else:
            return redirect("thread-detail", thread_id=thread.id)
    search = Search(key=key, value=value, status=status or None)

    threads: list[Thread] = []
    next_cursor: str | None = None
    if not not_found_id:
        try:
            if search.by_catalog:
                threads, next_cursor = _search_page(store, search, cursor)
            else:
                page = store.list_threads(limit=THREADS_PER_PAGE, cursor=cursor)
                threads, next_cursor = page.items, page.next_cursor
        except InvalidCursor:
            return _bad_request(
                request,
                "The page link is not valid (it may be from an older version of this page). "
                "Start again from the newest threads.",
            )
    catalog = store.catalog()
    rows = [
        _thread_row(store, thread, _latest_status(store, catalog, thread.id)) for thread in threads
    ]
    live = any(row.live for row in rows)

    # What the pager links carry over, so that "Older" stays within the search.
    if "key" in request.GET:
        asked = {"key": key, "value": value, "status": status}
    else:
        asked = {"q": query, "status": status}
    filters = {name: text for name, text in asked.items() if text}
    base = reverse("thread-list")
    context = {
        "rows": rows,
        "live": live,
        "query": query,
        "status": status,
        "statuses": RUN_STATUSES,
        "search": search,
        "not_found_id": not_found_id,
        "is_first_page": cursor is None,
        "newest_url": f"{base}?{urlencode(filters)}" if filters else base,
        "older_url": f"?{urlencode({**filters, 'cursor': next_cursor})}" if next_cursor else "",
        "filtered": bool(filters),
    }
    if request.htmx:
        return TemplateResponse(
            request, "threads/list.html#rows", context, status=200 if live else HTMX_STOP_POLLING
        )
    return TemplateResponse(request, "threads/list.html", context)


def _search_page(
    store: ThreadStore, search: Search, cursor: str | None
) -> tuple[list[Thread], str | None]:
    """A page of the catalog's answer (newest first), paged by offset."""
    catalog = store.catalog()
    if search.key is not None:
        ids = catalog.threads_with_metadata(search.key, search.value or "")
        if search.status is not None:
            with_status = set(catalog.threads_with_latest_status(search.status))
            ids = [thread_id for thread_id in ids if thread_id in with_status]
    else:
        ids = catalog.threads_with_latest_status(search.status or "")
    start = _offset(cursor)
    end = start + THREADS_PER_PAGE
    threads = []
    for thread_id in ids[start:end]:
        try:
            threads.append(store.get_thread(thread_id))
        except ThreadNotFound:
            continue  # deleted since the catalog saw it
    return threads, (str(end) if len(ids) > end else None)


# ------------------------------------------------------------------------- create


@require_http_methods(["GET", "POST"])
@writer_required
def thread_create(request: HtmxHttpRequest) -> HttpResponse:
    if request.method != "POST":
        return TemplateResponse(request, "threads/new.html", {"form": NewThreadForm()})
    form = NewThreadForm(request.POST)
    if not form.is_valid():
        status = 200 if form.adding_row else 400
        return TemplateResponse(request, "threads/new.html", {"form": form}, status=status)
    store = get_store()
    thread = store.create_thread(new_thread(form.metadata))
    text = form.cleaned_data["message"]
    if text:
        store.append_message(thread.id, new_message(thread.id, "user", text))
    messages.success(request, "Thread created." + (" Its first message is posted." if text else ""))
    return redirect("thread-detail", thread_id=thread.id)


# ------------------------------------------------------------------------- detail


_slug = functools.lru_cache(maxsize=256)(slugify)


def message_items(thread_id: str, messages: list[ThreadMessage]) -> list[SafeString]:
    """Messages as threads/_messages.html shows them: each one's whole list item, escaped
    here. A thread page shows 50, and on a long thread they are most of the page's work;
    in the template each message cost four variables resolved and escaped through
    Django's lazy-string wrapper, about three times what this f-string costs."""
    items = []
    for message in messages:
        created = datetime.fromtimestamp(message.created_at, tz=UTC)
        run_link = ""
        if is_safe_id(message.run_id):
            url = reverse("run-detail", kwargs={"thread_id": thread_id, "run_id": message.run_id})
            run_link = f' · <a href="{escape(url)}">run</a>'
        badge = ""
        if message.status != "completed":
            status = escape(message.status)
            badge = f' <span class="badge status-{escape(_slug(message.status))}">{status}</span>'
        # stdlib html.escape is what django.utils.html.escape applies, without its lazy-
        # string wrapper; every interpolated value is escaped.
        head = (
            f'<strong class="role">{escape(role_label(message.role))}</strong> '
            f'<span class="muted"><time datetime="{created.isoformat().replace("+00:00", "Z")}">'
            f"{created.strftime('%Y-%m-%d %H:%M UTC')}</time>{run_link}</span>{badge}"
        )
        html = (
            f'<li class="msg role-{escape(_slug(message.role))}" id="{escape(message.id)}">\n'
            f'  <p class="msg-head">{head}</p>\n'
            f'  <div class="msg-text">{escape(message.text)}</div>\n</li>'
        )
        items.append(mark_safe(html))
    return items


def _metadata_version(metadata: dict[str, str]) -> str:
    """A short fingerprint of the metadata, to notice edits made by someone else."""
    encoded = json.dumps(metadata, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _live_context(store: ThreadStore, thread: Thread, *, last_message_id: str) -> dict[str, Any]:
    """The thread's runs, and whether one is active (which makes the page poll)."""
    runs = [run for run in store.list_runs(thread.id) if is_safe_id(run.id)]
    active = next((run for run in runs if not run.status.is_terminal), None)
    return {
        "runs": runs[:RUNS_SHOWN],
        "runs_hidden": max(0, len(runs) - RUNS_SHOWN),
        "active_run": active,
        "last_message_id": last_message_id,
    }


@dataclass(frozen=True)
class LatestMessages:
    """A thread's newest page of messages, read and formatted for the thread page."""

    page: Page[ThreadMessage]
    items: list[SafeString]  # message_items(page.items)


class KeptMessages:
    """The newest page of messages of the threads this process showed last, kept while
    the store vouches that the thread's log has not changed since it was read
    (ThreadStore.messages_version, one `stat`). A long thread's page then costs what a
    short one's does, and the page's poll while a run is active does not read and parse
    50 messages every 2 seconds. A message posted by any process changes the log, so it
    shows at the next load or poll."""

    def __init__(self, size: int) -> None:
        self.size = size  # threads
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[FilesVersion, LatestMessages]] = OrderedDict()

    def latest(self, store: ThreadStore, thread_id: str) -> LatestMessages:
        version = store.messages_version(thread_id)  # before the read: see there
        with self._lock:
            found = self._kept.get(thread_id)
            if found is not None and version is not None and found[0] == version:
                self._kept.move_to_end(thread_id)
                return found[1]
        page = store.latest_messages(thread_id, limit=MESSAGES_PER_PAGE)
        latest = LatestMessages(page, message_items(thread_id, page.items))
        if version is not None:
            with self._lock:
                keep_newest(self._kept, thread_id, (version, latest), self.size)
        return latest

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


kept_messages = KeptMessages(KEPT_THREADS)


def _detail_context(store: ThreadStore, thread: Thread, **overrides: Any) -> dict[str, Any]:
    latest = kept_messages.latest(store, thread.id)
    page = latest.page
    last_id = page.items[-1].id if page.items else ""
    context: dict[str, Any] = {
        "thread": thread,
        "thread_messages": latest.items,
        "earlier_cursor": page.next_cursor,
        "metadata_version": _metadata_version(thread.metadata),
        "message_form": MessageForm(),
        "metadata_form": MetadataForm(pairs=thread.metadata),
        "start_run_form": StartRunForm(),
        **_live_context(store, thread, last_message_id=last_id),
    }
    context.update(overrides)
    return context


def _messages_after(
    store: ThreadStore, thread_id: str, after: str
) -> tuple[list[ThreadMessage], list[SafeString]]:
    """Messages newer than the one with ID `after` (the newest the page shows), and
    their list items."""
    latest = kept_messages.latest(store, thread_id)
    ids = [message.id for message in latest.page.items]
    start = ids.index(after) + 1 if after in ids else 0
    return latest.page.items[start:], latest.items[start:]


@require_GET
@vary_on_headers("HX-Request")
def thread_detail(request: HtmxHttpRequest, thread_id: str) -> HttpResponse:
    store = get_store()
    thread = store.get_thread(thread_id)
    if request.htmx:
        # The runs panel polling while a run is active: its status, plus any messages
        # that appeared since (the run's reply) appended to the list.
        new, new_items = _messages_after(store, thread.id, request.GET.get("after", ""))
        last_id = new[-1].id if new else request.GET.get("after", "")
        context = {
            "thread": thread,
            "new_messages": new_items,
            **_live_context(store, thread, last_message_id=last_id),
        }
        status = 200 if context["active_run"] else HTMX_STOP_POLLING
        return TemplateResponse(request, "threads/detail.html#live_poll", context, status=status)
    return TemplateResponse(request, "threads/detail.html", _detail_context(store, thread))


# ----------------------------------------------------------------------- messages


@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def thread_messages(request: HtmxHttpRequest, thread_id: str) -> HttpResponse:
    """GET: a page of earlier messages (?before=<cursor>). POST: post a user message."""
    if request.method == "POST":
        return _post_message(request, thread_id)
    store = get_store()
    thread = store.get_thread(thread_id)
    before = request.GET.get("before") or ""
    if not before:
        return redirect("thread-detail", thread_id=thread.id)
    try:
        page = store.messages_before(thread.id, before, limit=MESSAGES_PER_PAGE)
    except InvalidCursor:
        return _bad_request(
            request,
            "The link to earlier messages is not valid. Open the thread again and use "
            "“Load earlier messages” from there.",
        )
    context = {
        "thread": thread,
        "thread_messages": message_items(thread.id, page.items),
        "earlier_cursor": page.next_cursor,
    }
    template = "threads/messages.html#older" if request.htmx else "threads/messages.html"
    return TemplateResponse(request, template, context)


@writer_required
def _post_message(request: HtmxHttpRequest, thread_id: str) -> HttpResponse:
    store = get_store()
    thread = store.get_thread(thread_id)
    form = MessageForm(request.POST)
    # The newest message the page shows, carried by the form: where new messages start.
    after = request.POST.get("after", "")
    after = after if is_safe_id(after) else ""
    busy: ThreadBusy | None = None
    if form.is_valid():
        message = new_message(thread.id, "user", form.cleaned_data["text"])
        try:
            store.append_message(thread.id, message)
        except ThreadBusy as error:
            busy = error
        else:
            if request.htmx:
                context = {
                    "thread": thread,
                    "posted": message_items(thread.id, [message]),
                    "message_form": MessageForm(),
                    "last_message_id": message.id,
                }
                return TemplateResponse(request, "threads/detail.html#post_ok", context)
            messages.success(request, "Message posted.")
            return redirect(reverse("thread-detail", args=[thread.id]) + "#post-message")

    # Not posted: show the form again with what was typed and why.
    if request.htmx:
        context = {
            "thread": thread,
            "message_form": form,
            "busy_run_id": busy.run_id if busy else None,
            "last_message_id": after,
        }
        if busy:
            # Show the active run, and start watching it, where the page lists runs.
            context.update(_live_context(store, thread, last_message_id=after))
        response = TemplateResponse(request, "threads/detail.html#post_refused", context)
        return reswap(retarget(response, "#post-form"), "outerHTML")
    context = _detail_context(
        store, thread, message_form=form, busy_run_id=busy.run_id if busy else None
    )
    return TemplateResponse(request, "threads/detail.html", context, status=409 if busy else 400)


# ----------------------------------------------------------------------- metadata

STALE_METADATA = (
    "Someone changed the metadata of this thread while you were editing it; their "
    "version is shown above. Save again to replace it with yours."
)


@require_POST
@writer_required
@vary_on_headers("HX-Request")
def thread_metadata(request: HtmxHttpRequest, thread_id: str) -> HttpResponse:
    store = get_store()
    thread = store.get_thread(thread_id)
    data = request.POST.copy()
    current = _metadata_version(thread.metadata)
    form = MetadataForm(data, pairs=thread.metadata)
    if form.is_valid():
        if data.get("version", current) != current:
            form.add_error(None, STALE_METADATA)
            data["version"] = current  # a second save is a deliberate overwrite
        else:
            thread = store.update_thread_metadata(thread.id, form.metadata)
            if request.htmx:
                context = {
                    "thread": thread,
                    "metadata_form": MetadataForm(pairs=thread.metadata),
                    "metadata_version": _metadata_version(thread.metadata),
                    "metadata_saved": True,
                }
                return TemplateResponse(request, "threads/detail.html#metadata", context)
            messages.success(request, "Metadata saved.")
            return redirect(reverse("thread-detail", args=[thread.id]) + "#metadata")

    status = 200 if form.adding_row else 400
    overrides = {
        "metadata_form": form,
        "metadata_version": data.get("version", current),
        "metadata_open": True,
    }
    if request.htmx:
        context = {"thread": thread, **overrides}
        return TemplateResponse(request, "threads/detail.html#metadata", context)
    context = _detail_context(store, thread, **overrides)
    return TemplateResponse(request, "threads/detail.html", context, status=status)


# ------------------------------------------------------------------------ exports


def _attachment(body: str, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_GET
def export_json(request: HtmxHttpRequest, thread_id: str) -> HttpResponse:
    """The thread, all its messages (oldest first) and its runs with their steps (oldest
    first), each in the Assistants v2 shape."""
    store = get_store()
    thread = store.get_thread(thread_id)
    runs = sorted(store.list_runs(thread.id), key=lambda run: (run.created_at, run.id))
    document = {
        "object": "threadsite.thread_export",
        "exported_at": int(time.time()),
        "thread": thread.to_dict(),
        "messages": [message.to_dict() for message in store.list_messages(thread.id)],
        "runs": [
            {**run.to_dict(), "steps": [s.to_dict() for s in store.list_steps(thread.id, run.id)]}
            for run in runs
        ],
    }
    body = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    return _attachment(body, "application/json; charset=utf-8", f"{thread.id}.json")


@require_GET
def export_markdown(request: HtmxHttpRequest, thread_id: str) -> HttpResponse:
    """A readable transcript: metadata, every message in order, and the runs."""
    store = get_store()
    thread = store.get_thread(thread_id)
    runs = sorted(store.list_runs(thread.id), key=lambda run: (run.created_at, run.id))
    body = markdown_transcript(thread, store.list_messages(thread.id), runs)
    return _attachment(body, "text/markdown; charset=utf-8", f"{thread.id}.md")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _quoted(text: str) -> list[str]:
    if not text:
        return ["> *(no text)*"]
    return [f"> {line}" if line else ">" for line in text.split("\n")]


def markdown_transcript(
    thread: Thread, thread_messages: list[ThreadMessage], runs: list[Run]
) -> str:
    lines = [f"# Thread {thread.id}", "", f"- Created: {utc(thread.created_at)}"]
    if thread.metadata:
        lines.append("- Metadata:")
        lines += [f"  - {_one_line(k)}: {_one_line(v)}" for k, v in thread.metadata.items()]
    else:
        lines.append("- Metadata: none")
    lines += ["", "## Messages", ""]
    if not thread_messages:
        lines += ["No messages.", ""]
    for message in thread_messages:
        heading = f"### {role_label(message.role)}, {utc(message.created_at)}"
        if message.run_id:
            heading += f" (run {message.run_id})"
        if message.status != "completed":
            heading += f" [{message.status}]"
        lines += [heading, "", *_quoted(message.text), ""]
    lines += ["## Runs", ""]
    if not runs:
        lines += ["No runs.", ""]
    for run in runs:
        line = f"- {run.id}: {run.status.value}, model {_one_line(run.model) or '(none)'}"
        line += f", created {utc(run.created_at)}"
        if run.ended_at:
            line += f", ended {utc(run.ended_at)}"
        if run.last_error:
            line += f", error {run.last_error.code}: {_one_line(run.last_error.message)}"
        lines.append(line)
    if runs:
        lines.append("")
    return "\n".join(lines)
