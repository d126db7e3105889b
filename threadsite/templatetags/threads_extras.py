"""Template filters for the thread pages: UTC times, role labels, status badges."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from stores import is_safe_id

register = template.Library()

ROLE_LABELS = {"user": "User", "assistant": "Assistant", "system": "System"}


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    return None


@register.filter
def utc(value: object) -> str:
    """A Unix time or datetime as "2026-11-26 06:30 UTC"; "" for nothing."""
    moment = _as_datetime(value)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


@register.filter
def utc_time(value: object) -> SafeString | str:
    """A <time> element showing `utc`, with the exact ISO time as its datetime."""
    moment = _as_datetime(value)
    if moment is None:
        return ""
    return format_html(
        '<time datetime="{}">{}</time>',
        moment.isoformat().replace("+00:00", "Z"),
        moment.strftime("%Y-%m-%d %H:%M UTC"),
    )


@register.filter
def role_label(role: object) -> str:
    """Who wrote a message, as a word (never colour alone)."""
    text = str(role or "")
    return ROLE_LABELS.get(text, text.replace("_", " ").capitalize() or "Unknown")


@register.filter
def status_badge(status: object) -> SafeString | str:
    """A run status as a badge whose text says the status."""
    if status is None or status == "":
        return ""
    text = str(getattr(status, "value", status))
    return format_html('<span class="badge status-{}">{}</span>', text, text)


@register.filter(name="is_safe_id")
def is_safe_id_filter(value: object) -> bool:
    """Whether a record ID read from disk can go into a link."""
    return is_safe_id(value)
