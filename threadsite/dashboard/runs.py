"""Runs: start one, watch it live, cancel it.

The run page's live block (status, timings, error, steps, the reply) is the partial
"runs/detail.html#live". The same URL serves it to htmx, which polls it while the run
is active; once the run has ended the answer is HTTP 286, so htmx shows the final state
and stops asking.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.loader import get_template
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HTMX_STOP_POLLING, HttpResponseClientRedirect

from stores import (
    Run,
    RunInTerminalState,
    RunStatus,
    RunStep,
    RunView,
    ThreadBusy,
    ThreadStore,
    new_run,
)
from threadsite.services import get_store
from threadsite.templatetags.dashboard import duration, status_class, utc, utc_iso

from .http import HtmxHttpRequest, keep_newest
from .permissions import can_write, writer_required
from .runs_forms import StartRunForm

# The poll's answer says the server's clock (epoch seconds) for the clocks in the page.
SERVER_TIME_HEADER = "X-Server-Time"
# A cancel request is accepted in these states; `cancelling` is already on its way.
CANCELLABLE = frozenset({RunStatus.QUEUED, RunStatus.IN_PROGRESS, RunStatus.REQUIRES_ACTION})
# Looking for a finished run's reply, read at most this many messages back from the
# newest (the reply is appended when the run ends, so it is normally among the last).
REPLY_SEARCH_LIMIT = 1000
REPLY_PAGE = 50

STATUS_EXPLANATIONS = {
    RunStatus.QUEUED: "Waiting for a run worker to pick it up.",
    RunStatus.IN_PROGRESS: "A run worker is writing the reply.",
    RunStatus.REQUIRES_ACTION: "Waiting for tool output, which this dashboard cannot give.",
    RunStatus.CANCELLING: "Cancelling: the worker stops within a second or two.",
    RunStatus.COMPLETED: "Finished with a reply.",
    RunStatus.FAILED: "Ended with an error.",
    RunStatus.CANCELLED: "Cancelled before it finished.",
    RunStatus.EXPIRED: "Ended because it ran or waited past the time limit.",
    RunStatus.INCOMPLETE: "Ended before the reply was complete.",
}


@dataclass(frozen=True)
class Reply:
    """What the run page shows as the assistant's text, and how to label it."""

    state: str  # waiting | streaming | final | incomplete | none
    text: str = ""
    message_id: str | None = None


@dataclass(frozen=True)
class Moment:
    """A time as the page shows it: machine-readable for <time datetime>, and for people."""

    iso: str
    text: str


@dataclass(frozen=True)
class StepRow:
    """One row of the steps table, formatted once in Python: the run page is polled every
    second by every open tab, and each filter call in its template costs more than this."""

    step: RunStep
    status_class: str
    created: Moment | None
    ended: Moment | None


@dataclass(frozen=True)
class RunPage:
    run: Run
    steps: list[RunStep]
    reply: Reply
    explanation: str
    is_terminal: bool
    can_cancel: bool
    # Seconds between created and started (or now, while it waits).
    waited: float | None
    # Seconds between started and ended (or now, while it runs).
    elapsed: float | None
    no_worker_alive: bool
    # The same facts, formatted for the live block.
    status_class: str = ""
    started: Moment | None = None
    ended: Moment | None = None
    waited_text: str = ""
    elapsed_text: str = ""
    step_rows: tuple[StepRow, ...] = ()
    # Epoch seconds the browser counts "Waiting for" / "Running for" from while they
    # grow (static/js/live.js), so an answer rendered a while ago still reads right.
    waited_since: str = ""
    elapsed_since: str = ""
    # This server's clock when the page was rendered, for the browser's count.
    server_time: str = ""


# --------------------------------------------------------------------------- views


@require_POST
@writer_required
def run_create(request: HtmxHttpRequest, thread_id: str) -> HttpResponse:
    store = get_store()
    thread = store.get_thread(thread_id)  # an unknown or unsafe ID is the 404 page
    form = StartRunForm(request.POST)
    if form.is_valid():
        try:
            run = store.create_run(
                thread.id,
                new_run(
                    thread.id,
                    model=form.cleaned_data["model"],
                    instructions=form.cleaned_data["instructions"],
                ),
            )
        except ThreadBusy as busy:
            if not request.htmx:
                messages.error(request, _busy_message(busy))
                return redirect("thread-detail", thread_id=thread.id)
            form.add_error(None, _busy_message(busy))
            return _start_form_response(request, thread.id, form, busy_run_id=busy.run_id)
        url = reverse("run-detail", kwargs={"thread_id": thread.id, "run_id": run.id})
        if request.htmx:
            return HttpResponseClientRedirect(url)
        return HttpResponseRedirect(url)
    return _start_form_response(request, thread.id, form)


@require_GET
@vary_on_headers("HX-Request")
def run_detail(request: HtmxHttpRequest, thread_id: str, run_id: str) -> HttpResponse:
    store = get_store()
    if request.htmx:
        view = live_blocks.unchanged_view(store, thread_id, run_id)
        return _live_block_response(request, store, view or store.run_view(thread_id, run_id))
    return _run_response(request, store, store.run_view(thread_id, run_id), notice=None)


@require_POST
@writer_required
def run_cancel(request: HtmxHttpRequest, thread_id: str, run_id: str) -> HttpResponse:
    store = get_store()
    try:
        run = store.cancel_run(thread_id, run_id)
    except RunInTerminalState as ended:
        run = ended.run
        notice = f"This run had already ended: {run.status.value}."
    else:
        if run.status is RunStatus.CANCELLED:
            notice = "Cancelled."
        else:
            notice = "Cancelling: the worker stops within a second or two."
    if not request.htmx:
        messages.info(request, notice)
        return redirect("run-detail", thread_id=run.thread_id, run_id=run.id)
    return _run_response(request, store, store.run_view(run.thread_id, run.id), notice=notice)


# ------------------------------------------------------------------------- helpers


def _busy_message(busy: ThreadBusy) -> str:
    return (
        f"This thread already has an active run ({busy.run_id}): wait for it to end or "
        "cancel it, then start a new one."
    )


def _start_form_response(
    request: HtmxHttpRequest, thread_id: str, form: StartRunForm, *, busy_run_id: str | None = None
) -> TemplateResponse:
    """The start form again, with its errors: in place for htmx (whatever form posted it
    is replaced), as a page of its own without JavaScript."""
    context = {"thread_id": thread_id, "form": form, "busy_run_id": busy_run_id}
    if request.htmx:
        response = TemplateResponse(request, "runs/_start_form.html", context)
        response["HX-Retarget"] = "closest form"
        response["HX-Reswap"] = "outerHTML"
        return response
    return TemplateResponse(request, "runs/start.html", context, status=400)


def _run_response(
    request: HtmxHttpRequest,
    store: ThreadStore,
    view: RunView,
    *,
    notice: str | None,
    no_worker_alive: bool | None = None,
) -> HttpResponse:
    page = run_page(store, view, no_worker_alive=no_worker_alive)
    run = view.run
    ids = {"thread_id": run.thread_id, "run_id": run.id}
    context = {
        "page": page,
        "run": run,
        "notice": notice,
        "poll_url": reverse("run-detail", kwargs=ids),
        "cancel_url": reverse("run-cancel", kwargs=ids),
    }
    if request.htmx:
        # Every open run page asks for this every second, so it is rendered with a plain
        # context: no context processors (the role is looked up only when the cancel
        # button may show) and no CSRF token, which would re-send the CSRF cookie with
        # every poll. htmx sends the page's token as a header (<body hx-headers>), so the
        # cancel form works without one; the full page below keeps it for no-JS use.
        context["can_write"] = page.can_cancel and can_write(request.user)
        body = get_template("runs/detail.html#live").render(context)
        return HttpResponse(body, status=HTMX_STOP_POLLING if page.is_terminal else 200)
    return TemplateResponse(request, "runs/detail.html", context)


class LiveBlocks:
    """The live blocks this process last sent for the runs being polled, each with the
    run as it was read for it. Between a run's changes every poll reads the same run,
    steps and draft, and gets the same block (the clocks in it count in the browser), so
    it is sent again instead of rendered again.

    A poll first asks the store whether the run's files changed since the last read
    (ThreadStore.run_version, a few `stat`s); only if they may have is the run read
    again, and then compared, so a change made by any process shows at the next poll."""

    def __init__(self, size: int) -> None:
        self.size = size  # runs; 0: keep none
        self._lock = threading.Lock()
        self._blocks: OrderedDict[tuple[str, str, bool], tuple[RunView, bool, bytes]] = (
            OrderedDict()
        )
        self._views: OrderedDict[tuple[str, str], RunView] = OrderedDict()

    def unchanged_view(self, store: ThreadStore, thread_id: str, run_id: str) -> RunView | None:
        """The run as last read for a block, if the store vouches that it has not
        changed since; None means read it again."""
        with self._lock:
            view = self._views.get((thread_id, run_id))
        if view is None or view.version is None:
            return None
        return view if store.run_version(thread_id, run_id) == view.version else None

    def get(self, view: RunView, *, can_write: bool, no_worker_alive: bool) -> bytes | None:
        key = (view.run.thread_id, view.run.id, can_write)
        with self._lock:
            found = self._blocks.get(key)
            if found is None or found[1] != no_worker_alive:
                return None
            if found[0] is not view and found[0] != view:  # usually the very view kept
                return None
            # The same run, perhaps read at a newer version: kept as its latest read, so
            # that the next poll finds the very view it gets from unchanged_view here.
            keep_newest(self._blocks, key, (view, no_worker_alive, found[2]), self.size)
            self._remember(view)
            return found[2]

    def put(self, view: RunView, *, can_write: bool, no_worker_alive: bool, body: bytes) -> None:
        if not self.size:
            return
        key = (view.run.thread_id, view.run.id, can_write)
        with self._lock:
            keep_newest(self._blocks, key, (view, no_worker_alive, body), self.size)
            self._remember(view)

    def _remember(self, view: RunView) -> None:
        """Keep `view` as the run's latest read (under the lock), within `size` runs."""
        keep_newest(self._views, (view.run.thread_id, view.run.id), view, self.size)

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._views.clear()


live_blocks = LiveBlocks(settings.THREADSITE_LIVE_BLOCKS)


def _live_block_response(
    request: HtmxHttpRequest, store: ThreadStore, view: RunView
) -> HttpResponse:
    """A poll: the live block, from live_blocks when the run has not changed."""
    if view.run.status.is_terminal:
        # Asked once (the answer stops the polling), and its reply comes from the log.
        return _run_response(request, store, view, notice=None)
    # The role matters only while the Cancel button can show.
    writer = view.run.status in CANCELLABLE and can_write(request.user)
    no_worker_alive = view.run.status is RunStatus.QUEUED and not store.live_workers()
    body = live_blocks.get(view, can_write=writer, no_worker_alive=no_worker_alive)
    if body is None:
        response = _run_response(request, store, view, notice=None, no_worker_alive=no_worker_alive)
        live_blocks.put(
            view, can_write=writer, no_worker_alive=no_worker_alive, body=response.content
        )
    else:
        response = HttpResponse(body)
    # The block may have been rendered a while ago: its clocks count from this.
    response[SERVER_TIME_HEADER] = _epoch(time.time())
    return response


def run_page(
    store: ThreadStore,
    view: RunView,
    *,
    now: float | None = None,
    no_worker_alive: bool | None = None,
) -> RunPage:
    """Everything the run page shows about a run, from one read of its directory (and,
    once it has ended, of the end of the message log for its reply).

    The run was read first: when it has ended, everything read after it (steps, reply)
    is final too, so the last answer before polling stops is consistent."""
    now = time.time() if now is None else now
    run, steps = view.run, view.steps
    is_terminal = run.status.is_terminal
    if run.status is RunStatus.QUEUED:
        reply = Reply("waiting")
    elif not is_terminal:
        draft = view.draft.text if view.draft else None
        reply = Reply("streaming", draft) if draft else Reply("waiting")
    else:
        reply = _final_reply(store, run, steps)
    started, ended = run.started_at, run.ended_at
    waited = None
    if run.status is RunStatus.QUEUED:
        waited = now - run.created_at
    elif started is not None:
        waited = started - run.created_at
    elapsed = None
    if started is not None and ended is not None:
        elapsed = ended - started
    elif started is not None and not is_terminal:
        elapsed = now - started
    if no_worker_alive is None:
        no_worker_alive = run.status is RunStatus.QUEUED and not store.live_workers(now=now)
    return RunPage(
        run=run,
        steps=steps,
        reply=reply,
        explanation=STATUS_EXPLANATIONS.get(run.status, ""),
        is_terminal=is_terminal,
        can_cancel=run.status in CANCELLABLE,
        waited=waited,
        elapsed=elapsed,
        no_worker_alive=no_worker_alive,
        status_class=status_class(run.status),
        started=_moment(started),
        ended=_moment(ended),
        waited_text=duration(waited) if waited is not None else "",
        elapsed_text=duration(elapsed) if elapsed is not None else "",
        step_rows=tuple(_step_row(step) for step in steps),
        waited_since=_epoch(run.created_at) if run.status is RunStatus.QUEUED else "",
        elapsed_since=_epoch(started) if started is not None and not is_terminal else "",
        server_time=_epoch(now),
    )


def _epoch(value: float) -> str:
    return f"{value:.3f}"


def _moment(value: float | None) -> Moment | None:
    if not value:
        return None
    return _formatted_moment(value)


@lru_cache(maxsize=4096)  # the same few times, formatted again at every poll otherwise
def _formatted_moment(value: float) -> Moment:
    return Moment(utc_iso(value), utc(value, "seconds"))


def _step_row(step: RunStep) -> StepRow:
    ended = step.completed_at or step.failed_at or step.cancelled_at or step.expired_at
    return StepRow(step, status_class(step.status), _moment(step.created_at), _moment(ended))


def _final_reply(store: ThreadStore, run: Run, steps: list[RunStep]) -> Reply:
    """The message an ended run wrote: the one its message_creation step names, else the
    newest assistant message that carries its run_id. Reads back from the newest
    message, and stops at messages older than the run."""
    named = {step.message_id for step in steps if step.message_id}
    cursor: str | None = None
    scanned = 0
    while scanned < REPLY_SEARCH_LIMIT:
        page = store.messages_before(run.thread_id, cursor, limit=REPLY_PAGE)
        for message in reversed(page.items):
            if message.id in named or (message.role == "assistant" and message.run_id == run.id):
                state = "incomplete" if message.status == "incomplete" else "final"
                return Reply(state, message.text, message.id)
            if message.created_at < run.created_at:
                return Reply("none")
        scanned += len(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return Reply("none")
