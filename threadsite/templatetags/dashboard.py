"""Template filters for the run pages and the overview: UTC times, durations, badges.

{% load dashboard %}
<time datetime="{{ run.created_at|utc_iso }}">{{ run.created_at|utc }}</time>
{{ run.started_at|utc:"seconds" }}     2026-11-26 06:30:05 UTC
{{ seconds|duration }}                 2 min 05 s
<span class="badge {{ run.status|status_class }}">{{ run.status }}</span>
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from django import template

register = template.Library()

_STATUS_WORD = re.compile(r"[a-z_]{1,32}")


def as_utc(value: object) -> datetime | None:
    """A Unix time (int or float) or a datetime, as an aware UTC datetime; else None."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return datetime.fromtimestamp(value, tz=UTC)
    return None


@register.filter
def utc(value: object, precision: str = "") -> str:
    """ "2026-11-26 06:30 UTC" (with precision "seconds": "2026-11-26 06:30:05 UTC");
    "" for nothing, so templates can fall back with |default."""
    moment = as_utc(value)
    if moment is None:
        return ""
    pattern = "%Y-%m-%d %H:%M:%S UTC" if precision == "seconds" else "%Y-%m-%d %H:%M UTC"
    return moment.strftime(pattern)


@register.filter
def utc_iso(value: object) -> str:
    """The machine-readable time for <time datetime="...">: "2026-11-26T06:30:05Z"."""
    moment = as_utc(value)
    if moment is None:
        return ""
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


@register.filter
def duration(seconds: object) -> str:
    """A number of seconds for people: "0 s", "45 s", "2 min 05 s", "1 h 02 min",
    "3 d 4 h". Negative values (clock skew between hosts) count as zero."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    if not math.isfinite(seconds):
        return ""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@register.filter
def status_class(status: object) -> str:
    """The CSS class of a status badge: "status-in_progress". A value that is not a plain
    status word gets "status-unknown" (the badge's text still says what it is)."""
    word = str(getattr(status, "value", status) or "")
    return f"status-{word}" if _STATUS_WORD.fullmatch(word) else "status-unknown"
