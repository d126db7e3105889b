"""The /v1 addresses, as the Assistants v2 API names them. IDs are matched loosely here
and checked by the stores: an unsafe or unknown ID is a 404."""

from __future__ import annotations

from django.urls import path, re_path

from . import views

urlpatterns = [
    path("assistants", views.assistants),
    path("assistants/<str:assistant_id>", views.assistant),
    path("threads", views.threads),
    path("threads/runs", views.thread_and_run),
    path("threads/<str:thread_id>", views.thread),
    path("threads/<str:thread_id>/messages", views.messages),
    path("threads/<str:thread_id>/messages/<str:message_id>", views.message),
    path("threads/<str:thread_id>/runs", views.runs),
    path("threads/<str:thread_id>/runs/<str:run_id>", views.run),
    path("threads/<str:thread_id>/runs/<str:run_id>/cancel", views.run_cancel),
    path("threads/<str:thread_id>/runs/<str:run_id>/steps", views.steps),
    path("threads/<str:thread_id>/runs/<str:run_id>/steps/<str:step_id>", views.step),
    # Anything else under /v1 is a JSON 404, never the dashboard's page or sign-in.
    re_path(r"^.*$", views.not_found),
]
