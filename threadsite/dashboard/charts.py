"""Small charts drawn on the server as SVG geometry: the template turns it into markup.

No JavaScript and no chart library: a chart is a few rectangles, lines and labels whose
positions are computed here, so they can be tested without a browser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from stores import HourBucket

# Outcomes stacked from the bottom up: the common outcome at the base, failures on top
# where they catch the eye.
OUTCOMES = ("completed", "incomplete", "cancelled", "expired", "failed")

WIDTH = 480
HEIGHT = 180
LEFT = 34  # room for the count labels
RIGHT = 6
TOP = 10
BOTTOM = 24  # room for the hour labels
BAR_FILL = 0.7  # share of an hour's slot the bar covers
LABEL_EVERY_HOURS = 6


@dataclass(frozen=True)
class Segment:
    outcome: str
    count: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Bar:
    label: str  # "14:00"
    total: int
    title: str  # "14:00–15:00 UTC: 3 completed, 1 failed"
    segments: list[Segment]


@dataclass(frozen=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True)
class HourLabel:
    text: str
    x: float


@dataclass(frozen=True)
class LegendItem:
    outcome: str
    count: int


@dataclass(frozen=True)
class HourRow:
    """One hour of the chart as numbers, for the table under it."""

    label: str
    counts: list[int]  # in OUTCOMES order
    total: int


@dataclass(frozen=True)
class HourlyChart:
    width: int
    height: int
    left: int
    right: float
    baseline: float
    tick_label_x: int  # the counts' labels end here, left of the plot
    hour_label_y: int  # the hours' labels sit on this line, under the plot
    middle_x: float
    middle_y: float
    bars: list[Bar]
    ticks: list[Tick]
    hour_labels: list[HourLabel]
    legend: list[LegendItem]
    rows: list[HourRow]
    total: int
    summary: str
    outcomes: tuple[str, ...] = OUTCOMES


def runs_per_hour_chart(buckets: Sequence[HourBucket]) -> HourlyChart:
    """Stacked bars, one per hour (oldest first), split by how the runs ended."""
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = float(TOP + plot_height)
    slot = plot_width / max(1, len(buckets))
    bar_width = round(slot * BAR_FILL, 1)

    largest = max((bucket.total for bucket in buckets), default=0)
    step = _tick_step(largest)
    top_value = max(step, math.ceil(largest / step) * step)
    scale = plot_height / top_value

    bars: list[Bar] = []
    hour_labels: list[HourLabel] = []
    rows: list[HourRow] = []
    totals = dict.fromkeys(OUTCOMES, 0)
    for index, bucket in enumerate(buckets):
        start = datetime.fromtimestamp(bucket.start, tz=UTC)
        label = start.strftime("%H:00")
        centre = LEFT + slot * index + slot / 2
        if start.hour % LABEL_EVERY_HOURS == 0:
            hour_labels.append(HourLabel(label, round(centre, 1)))
        counts = [bucket.counts.get(outcome, 0) for outcome in OUTCOMES]
        rows.append(HourRow(label, counts, sum(counts)))
        segments = []
        stacked = 0
        for outcome, count in zip(OUTCOMES, counts, strict=True):
            if count <= 0:
                continue
            totals[outcome] += count
            y_top = baseline - (stacked + count) * scale
            segments.append(
                Segment(
                    outcome=outcome,
                    count=count,
                    x=round(centre - bar_width / 2, 1),
                    y=round(y_top, 1),
                    width=bar_width,
                    height=round(count * scale, 1),
                )
            )
            stacked += count
        if segments:
            end = (start.hour + 1) % 24
            parts = ", ".join(f"{s.count} {s.outcome}" for s in segments)
            bars.append(Bar(label, stacked, f"{label}–{end:02d}:00 UTC: {parts}", segments))

    ticks = [
        Tick(value, round(baseline - value * scale, 1)) for value in range(0, top_value + 1, step)
    ]
    total = sum(totals.values())
    legend = [LegendItem(outcome, totals[outcome]) for outcome in OUTCOMES]
    return HourlyChart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=float(WIDTH - RIGHT),
        baseline=baseline,
        tick_label_x=LEFT - 4,
        hour_label_y=HEIGHT - 6,
        middle_x=LEFT + plot_width / 2,
        middle_y=TOP + plot_height / 2,
        bars=bars,
        ticks=ticks,
        hour_labels=hour_labels,
        legend=legend,
        rows=rows,
        total=total,
        summary=_summary(len(buckets), bars, legend, total),
    )


def _tick_step(largest: int) -> int:
    """A round step (1, 2, 5, 10, 20, 50...) giving at most four intervals."""
    if largest <= 4:
        return 1
    target = largest / 4
    power = 10 ** math.floor(math.log10(target))
    for multiple in (1, 2, 5, 10):
        if multiple * power >= target:
            return int(multiple * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def _summary(hours: int, bars: list[Bar], legend: list[LegendItem], total: int) -> str:
    span = f"the last {hours} hours" if hours != 1 else "the last hour"
    if total == 0:
        return f"Runs ended per hour over {span}: none ended."
    parts = ", ".join(f"{item.count} {item.outcome}" for item in legend if item.count)
    busiest = max(bars, key=lambda bar: bar.total)
    runs = "run" if total == 1 else "runs"
    busiest_runs = "run" if busiest.total == 1 else "runs"
    return (
        f"Runs ended per hour over {span} (UTC): {total} {runs} ({parts}). "
        f"Busiest hour: {busiest.label} UTC with {busiest.total} {busiest_runs}."
    )
