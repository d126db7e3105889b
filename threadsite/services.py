"""The one place views get the thread store from."""

from __future__ import annotations

import functools
from pathlib import Path

from django.conf import settings

from stores import ThreadStore


def get_store() -> ThreadStore:
    """The store at settings.THREADSITE_STORE_ROOT, shared by all requests of a process."""
    return _store_at(Path(settings.THREADSITE_STORE_ROOT))


@functools.cache
def _store_at(root: Path) -> ThreadStore:
    return ThreadStore(root)


def clear_store_cache() -> None:
    _store_at.cache_clear()
