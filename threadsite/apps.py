from __future__ import annotations

from django.apps import AppConfig


class ThreadsiteConfig(AppConfig):
    name = "threadsite"
    verbose_name = "Threadsite"
