"""The overview: run counts, runs that need attention, worker health, runs per hour.

Its live block ("overview/overview.html#live") is served by the same URL to htmx, which
polls it for as long as the page is open: there is always something that can change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from stores import (
    Catalog,
    RunError,
    RunNotFound,
    RunStatus,
    RunSummary,
    ThreadNotFound,
    ThreadStore,
    WorkerHeartbeat,
    worker_is_alive,
)
from threadsite.services import get_store

from .charts import HourlyChart, runs_per_hour_chart
from .http import HtmxHttpRequest

# The order the counts are shown in: what is happening now, then how runs ended.
STATUS_ORDER = [
    RunStatus.QUEUED,
    RunStatus.IN_PROGRESS,
    RunStatus.REQUIRES_ACTION,
    RunStatus.CANCELLING,
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.EXPIRED,
    RunStatus.INCOMPLETE,
]
# Runs that ended badly or wait for someone: always worth a look.
PROBLEM_STATUSES = (RunStatus.FAILED, RunStatus.EXPIRED, RunStatus.REQUIRES_ACTION)
# Runs that only a live worker can move on.
WORKER_STATUSES = (RunStatus.IN_PROGRESS, RunStatus.CANCELLING)
# A queued run waiting this long while no worker is alive is stuck.
STUCK_QUEUED_SECONDS = 180.0
ATTENTION_SHOWN = 20
CHART_HOURS = 24

REASONS = {
    RunStatus.FAILED: "Failed",
    RunStatus.EXPIRED: "Ran or waited past the time limit",
    RunStatus.REQUIRES_ACTION: "Waiting for tool output",
    RunStatus.IN_PROGRESS: "Stuck: in progress, but no worker is alive to finish it",
    RunStatus.CANCELLING: "Stuck: being cancelled, but no worker is alive to finish the cancel",
}


@dataclass(frozen=True)
class StatusCount:
    status: str
    count: int


@dataclass(frozen=True)
class AttentionRow:
    run: RunSummary
    reason: str
    error: RunError | None
    since: float  # when the run last changed (or, for a waiting run, was created)


@dataclass(frozen=True)
class Workers:
    alive: list[WorkerHeartbeat]
    last_seen: WorkerHeartbeat | None  # the most recent heartbeat, alive or not
    queued: int

    @property
    def any_alive(self) -> bool:
        return bool(self.alive)

    @property
    def busy(self) -> int:
        return sum(beat.running for beat in self.alive)

    @property
    def capacity(self) -> int:
        return sum(beat.concurrency for beat in self.alive)


@dataclass(frozen=True)
class Overview:
    counts: list[StatusCount]
    total_runs: int
    workers: Workers
    attention: list[AttentionRow]
    attention_total: int
    chart: HourlyChart
    now: float


@require_GET
@vary_on_headers("HX-Request")
def overview(request: HtmxHttpRequest) -> TemplateResponse:
    context = {"overview": build_overview(get_store())}
    if request.htmx:
        return TemplateResponse(request, "overview/overview.html#live", context)
    return TemplateResponse(request, "overview/overview.html", context)


def build_overview(store: ThreadStore, *, now: float | None = None) -> Overview:
    now = time.time() if now is None else now
    catalog = store.catalog()
    by_status = catalog.run_counts()
    counts = [StatusCount(status.value, by_status.get(status.value, 0)) for status in STATUS_ORDER]
    workers = _workers(store, now)
    attention, attention_total = _attention(store, catalog, workers, now)
    return Overview(
        counts=counts,
        total_runs=sum(count.count for count in counts),
        workers=workers,
        attention=attention,
        attention_total=attention_total,
        chart=runs_per_hour_chart(catalog.ended_per_hour(hours=CHART_HOURS, now=now)),
        now=now,
    )


def _workers(store: ThreadStore, now: float) -> Workers:
    beats = store.heartbeats()  # most recent first
    alive = [beat for beat in beats if worker_is_alive(beat, now)]
    return Workers(alive=alive, last_seen=beats[0] if beats else None, queued=store.queued_count())


def _attention(
    store: ThreadStore, catalog: Catalog, workers: Workers, now: float
) -> tuple[list[AttentionRow], int]:
    """The runs someone should look at, most recent first, and how many there are."""
    found: list[tuple[RunSummary, str, float]] = []
    counts = catalog.run_counts()
    total = sum(counts.get(status.value, 0) for status in PROBLEM_STATUSES)
    for run in catalog.runs_in([s.value for s in PROBLEM_STATUSES], limit=ATTENTION_SHOWN):
        found.append((run, REASONS[run.status], run.updated_at))
    if not workers.any_alive:
        # Nothing moves these on until a worker starts.
        stuck = catalog.runs_in([s.value for s in WORKER_STATUSES], limit=ATTENTION_SHOWN)
        total += sum(counts.get(status.value, 0) for status in WORKER_STATUSES)
        found.extend((run, REASONS[run.status], run.updated_at) for run in stuck)
        queued = catalog.runs_in([RunStatus.QUEUED.value], limit=counts.get("queued", 0))
        waiting = [run for run in queued if now - run.created_at >= STUCK_QUEUED_SECONDS]
        total += len(waiting)
        for run in waiting:
            reason = f"Stuck: waiting {_minutes(now - run.created_at)} with no worker alive"
            found.append((run, reason, run.created_at))
    found.sort(key=lambda item: item[2], reverse=True)
    rows = []
    for run, reason, since in found[:ATTENTION_SHOWN]:
        rows.append(AttentionRow(run, reason, _last_error(store, run), since))
    return rows, total


def _last_error(store: ThreadStore, run: RunSummary) -> RunError | None:
    if run.status not in (RunStatus.FAILED, RunStatus.EXPIRED):
        return None
    try:
        return store.get_run(run.thread_id, run.run_id).last_error
    except (ThreadNotFound, RunNotFound):
        return None  # deleted since the catalog saw it


def _minutes(seconds: float) -> str:
    minutes = int(seconds // 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
