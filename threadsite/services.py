"""The one place views get the thread store (and the API its assistants) from."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from django.conf import settings

from stores import AssistantStore, ThreadStore


def get_store() -> ThreadStore:
    """The store at settings.THREADSITE_STORE_ROOT, shared by all requests of a process."""
    return _store_at(os.fspath(settings.THREADSITE_STORE_ROOT))


@functools.cache
def _store_at(root: str) -> ThreadStore:  # a str: quicker to look up than a Path
    return ThreadStore(Path(root))


def get_assistant_store() -> AssistantStore:
    """The assistants at settings.THREADSITE_ASSISTANTS_ROOT, beside the thread store."""
    return _assistants_at(Path(settings.THREADSITE_ASSISTANTS_ROOT))


@functools.cache
def _assistants_at(root: Path) -> AssistantStore:
    return AssistantStore(root)


def clear_store_cache() -> None:
    _store_at.cache_clear()
    _assistants_at.cache_clear()
