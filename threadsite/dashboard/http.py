"""What every dashboard view shares."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

K = TypeVar("K")
V = TypeVar("V")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def keep_newest(kept: OrderedDict[K, V], key: K, value: V, size: int) -> None:
    """Put `value` under `key` as the newest entry of `kept`, dropping the oldest beyond
    `size`: the per-process memories the polled pages answer from (the caller holds the
    lock that guards `kept`)."""
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > size:
        kept.popitem(last=False)
