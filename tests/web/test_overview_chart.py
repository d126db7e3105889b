"""The runs-per-hour chart's geometry, without a request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stores import HourBucket
from threadsite.dashboard.charts import BOTTOM, HEIGHT, OUTCOMES, TOP, runs_per_hour_chart

START = int(datetime(2026, 11, 25, 7, tzinfo=UTC).timestamp())  # 07:00 UTC


def day(counts_by_index: dict[int, dict[str, int]]) -> list[HourBucket]:
    return [HourBucket(START + 3600 * i, counts_by_index.get(i, {})) for i in range(24)]


def test_one_bar_per_hour_with_runs_and_one_segment_per_outcome():
    chart = runs_per_hour_chart(
        day(
            {
                0: {"completed": 2},
                5: {"failed": 1, "completed": 3, "cancelled": 1},
                23: {"expired": 4},
            }
        )
    )

    assert [bar.label for bar in chart.bars] == ["07:00", "12:00", "06:00"]
    assert [[s.outcome for s in bar.segments] for bar in chart.bars] == [
        ["completed"],
        ["completed", "cancelled", "failed"],
        ["expired"],
    ]
    assert chart.total == 11
    assert [(item.outcome, item.count) for item in chart.legend] == [
        ("completed", 5),
        ("incomplete", 0),
        ("cancelled", 1),
        ("expired", 4),
        ("failed", 1),
    ]
    assert chart.bars[1].title == "12:00–13:00 UTC: 3 completed, 1 cancelled, 1 failed"


def test_segments_stack_from_the_baseline_in_proportion():
    chart = runs_per_hour_chart(day({3: {"completed": 3, "failed": 1}, 4: {"completed": 2}}))

    plot_height = HEIGHT - TOP - BOTTOM
    tall, short = chart.bars
    bottom, top = tall.segments
    assert bottom.y + bottom.height == pytest.approx(chart.baseline, abs=0.2)
    assert top.y + top.height == pytest.approx(bottom.y, abs=0.2)
    assert bottom.height == pytest.approx(3 * top.height, abs=0.3)
    # The tallest bar reaches the top of the scale (4 runs, ticks 0..4).
    assert top.y == pytest.approx(TOP, abs=0.2)
    assert short.segments[0].height == pytest.approx(plot_height / 2, abs=0.2)
    assert bottom.x == top.x  # one column
    assert short.segments[0].x > bottom.x  # later hours to the right


def test_hour_labels_every_six_hours():
    chart = runs_per_hour_chart(day({}))

    assert [label.text for label in chart.hour_labels] == ["12:00", "18:00", "00:00", "06:00"]
    xs = [label.x for label in chart.hour_labels]
    assert xs == sorted(xs)


@pytest.mark.parametrize(
    ("largest", "ticks"),
    [
        (0, [0, 1]),
        (1, [0, 1]),
        (3, [0, 1, 2, 3]),
        (4, [0, 1, 2, 3, 4]),
        (5, [0, 2, 4, 6]),
        (9, [0, 5, 10]),
        (40, [0, 10, 20, 30, 40]),
        (41, [0, 20, 40, 60]),
        (999, [0, 500, 1000]),
    ],
)
def test_the_scale_uses_round_numbers(largest, ticks):
    chart = runs_per_hour_chart(day({0: {"completed": largest}} if largest else {}))

    assert [tick.value for tick in chart.ticks] == ticks
    assert chart.ticks[0].y == chart.baseline


def test_an_empty_day_has_no_bars_and_says_so():
    chart = runs_per_hour_chart(day({}))

    assert chart.bars == []
    assert chart.total == 0
    assert chart.summary == "Runs ended per hour over the last 24 hours: none ended."


def test_the_summary_names_the_totals_and_the_busiest_hour():
    chart = runs_per_hour_chart(day({2: {"completed": 1}, 9: {"completed": 2, "incomplete": 1}}))

    assert chart.summary == (
        "Runs ended per hour over the last 24 hours (UTC): 4 runs (3 completed, "
        "1 incomplete). Busiest hour: 16:00 UTC with 3 runs."
    )


def test_rows_list_every_hour_in_outcome_order():
    chart = runs_per_hour_chart(day({1: {"failed": 2, "completed": 1}}))

    assert len(chart.rows) == 24
    assert chart.rows[1].label == "08:00"
    assert chart.rows[1].counts == [1, 0, 0, 0, 2]
    assert chart.rows[1].total == 3
    assert chart.outcomes == OUTCOMES


def test_outcomes_the_chart_does_not_know_are_left_out():
    chart = runs_per_hour_chart(day({0: {"completed": 1, "mystery": 5}}))

    assert chart.total == 1
