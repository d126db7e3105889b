"""The caches every server process shares, kept as files under the data directory."""

from __future__ import annotations

import os
from typing import Any

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.filebased import FileBasedCache


class SharedFileCache(FileBasedCache):
    """Django's file-based cache, which every gunicorn process (and any manage.py
    command) on the machine sees alike, making its directory at the first write instead
    of at startup, so that commands that never write to it (a run worker, a check) do
    not need it."""

    def __init__(self, dir: str, params: dict[str, Any]) -> None:
        BaseCache.__init__(self, params)
        self._dir = os.path.abspath(dir)
