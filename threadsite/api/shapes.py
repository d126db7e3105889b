"""The Assistants v2 objects the API answers with.

The records' `to_dict()` already give v2 shapes; this adds what v2 clients expect of a
run beyond what the store keeps (settings Threadsite does not vary, such as
`tool_choice`), and the shapes that exist only on the wire: lists, deletions, and the
in-progress message and deltas of an event stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stores import Assistant, Run, RunStep, RunStepStatus, Thread, ThreadMessage

# What a run does that Threadsite never varies, in v2's words.
RUN_DEFAULTS: dict[str, Any] = {
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "response_format": "auto",
    "truncation_strategy": {"type": "auto", "last_messages": None},
    "temperature": 1.0,
    "top_p": 1.0,
    "max_prompt_tokens": None,
    "max_completion_tokens": None,
    "reasoning_effort": None,
}

ENDED_FIELDS = ("completed_at", "failed_at", "cancelled_at", "expired_at")


def thread(record: Thread) -> dict[str, Any]:
    return record.to_dict()


def message(record: ThreadMessage) -> dict[str, Any]:
    return record.to_dict()


def assistant(record: Assistant) -> dict[str, Any]:
    return record.to_dict()


def step(record: RunStep) -> dict[str, Any]:
    return record.to_dict()


def run(record: Run, *, run_timeout: float) -> dict[str, Any]:
    """A run as v2 gives it; an active run `expires_at` when the worker would expire it."""
    data = {**RUN_DEFAULTS, **record.to_dict()}
    if data.get("instructions") is None:
        data["instructions"] = ""
    if not record.status.is_terminal:
        data["expires_at"] = record.created_at + int(run_timeout)
    return data


def run_in_progress(record: Run, *, run_timeout: float) -> dict[str, Any]:
    """The run as it was while in progress, for a stream that saw it only later."""
    data = run(record, run_timeout=run_timeout)
    data.update(
        status="in_progress",
        last_error=None,
        usage=None,
        expires_at=record.created_at + int(run_timeout),
        **dict.fromkeys(ENDED_FIELDS),
    )
    return data


def step_in_progress(record: RunStep) -> dict[str, Any]:
    """The step as it was when created, for a stream that saw it only later."""
    data = step(record)
    data.update(
        status=RunStepStatus.IN_PROGRESS.value, last_error=None, **dict.fromkeys(ENDED_FIELDS)
    )
    return data


def message_in_progress(
    *, message_id: str, thread_id: str, run_id: str, assistant_id: str | None, created_at: int
) -> dict[str, Any]:
    """The reply a run is writing, before it has any text: what `thread.message.created`
    carries."""
    return {
        "id": message_id,
        "object": "thread.message",
        "created_at": created_at,
        "thread_id": thread_id,
        "status": "in_progress",
        "incomplete_details": None,
        "completed_at": None,
        "incomplete_at": None,
        "role": "assistant",
        "content": [],
        "assistant_id": assistant_id,
        "run_id": run_id,
        "attachments": [],
        "metadata": {},
    }


def message_delta(message_id: str, text: str, *, first: bool) -> dict[str, Any]:
    """New text of the reply's first (only) text block."""
    delta: dict[str, Any] = {"value": text}
    if first:
        delta["annotations"] = []
    return {
        "id": message_id,
        "object": "thread.message.delta",
        "delta": {"content": [{"index": 0, "type": "text", "text": delta}]},
    }


def deleted(object_name: str, record_id: str) -> dict[str, Any]:
    return {"id": record_id, "object": f"{object_name}.deleted", "deleted": True}


def page(data: Sequence[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(data),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
