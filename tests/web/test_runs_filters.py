"""The template filters of the run pages and the overview."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.template import Context, Template

from stores import RunStatus
from threadsite.templatetags.dashboard import duration, status_class, utc, utc_iso

MOMENT = int(datetime(2026, 11, 26, 6, 30, 5, tzinfo=UTC).timestamp())


def test_utc_formats_unix_times_and_datetimes():
    assert utc(MOMENT) == "2026-11-26 06:30 UTC"
    assert utc(MOMENT + 0.9) == "2026-11-26 06:30 UTC"
    assert utc(MOMENT, "seconds") == "2026-11-26 06:30:05 UTC"
    plus_two = timezone(timedelta(hours=2))
    assert utc(datetime(2026, 11, 26, 8, 30, tzinfo=plus_two)) == "2026-11-26 06:30 UTC"


@pytest.mark.parametrize("value", [None, "", "yesterday", True, float("nan")])
def test_utc_of_nothing_is_empty(value):
    assert utc(value) == ""
    assert utc_iso(value) == ""


def test_utc_iso_is_machine_readable():
    assert utc_iso(MOMENT) == "2026-11-26T06:30:05Z"
    assert utc_iso(MOMENT + 0.5) == "2026-11-26T06:30:05Z"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.7, "0 s"),
        (45, "45 s"),
        (60, "1 min 00 s"),
        (125, "2 min 05 s"),
        (3720, "1 h 02 min"),
        (86400 * 3 + 3600 * 4 + 59, "3 d 4 h"),
        (-5, "0 s"),
        (None, ""),
        ("12", ""),
    ],
)
def test_duration(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("status", "css"),
    [
        ("failed", "status-failed"),
        (RunStatus.IN_PROGRESS, "status-in_progress"),
        ('x" onclick="y', "status-unknown"),
        ("", "status-unknown"),
        (None, "status-unknown"),
    ],
)
def test_status_class(status, css):
    assert status_class(status) == css


def test_the_filters_load_in_a_template():
    template = Template(
        "{% load dashboard %}<time datetime=\"{{ t|utc_iso }}\">{{ t|utc:'seconds' }}</time> "
        "{{ d|duration }} {{ s|status_class }}"
    )

    rendered = template.render(Context({"t": MOMENT, "d": 65, "s": RunStatus.QUEUED}))

    assert rendered == (
        '<time datetime="2026-11-26T06:30:05Z">2026-11-26 06:30:05 UTC</time> 1 min 05 s '
        "status-queued"
    )
