from __future__ import annotations

from django.apps import AppConfig


class ThreadsiteConfig(AppConfig):
    name = "threadsite"
    verbose_name = "Threadsite"

    def ready(self) -> None:
        from threadsite import auth_cache

        # Always, not only when the server uses the cached backend: a change made by a
        # manage.py command must reach the servers' caches.
        auth_cache.connect_signals()
