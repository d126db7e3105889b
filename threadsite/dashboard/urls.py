"""Dashboard addresses. IDs are matched loosely here and checked by the store: an unsafe
or unknown ID is a 404, never a file lookup outside the store."""

from __future__ import annotations

from django.urls import path

from . import overview, runs, threads

urlpatterns = [
    # First: every open run page asks for it every second, and the resolver tries the
    # addresses in order. None of the others can match what it matches.
    path("threads/<str:thread_id>/runs/<str:run_id>/", runs.run_detail, name="run-detail"),
    path("", overview.overview, name="overview"),
    path("threads/", threads.thread_list, name="thread-list"),
    path("threads/new", threads.thread_create, name="thread-create"),
    path("threads/<str:thread_id>/", threads.thread_detail, name="thread-detail"),
    path("threads/<str:thread_id>/messages", threads.thread_messages, name="thread-messages"),
    path("threads/<str:thread_id>/metadata", threads.thread_metadata, name="thread-metadata"),
    path("threads/<str:thread_id>/export.json", threads.export_json, name="thread-export-json"),
    path("threads/<str:thread_id>/export.md", threads.export_markdown, name="thread-export-md"),
    path("threads/<str:thread_id>/runs", runs.run_create, name="run-create"),
    path("threads/<str:thread_id>/runs/<str:run_id>/cancel", runs.run_cancel, name="run-cancel"),
]
