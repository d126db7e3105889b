"""Record types. `to_dict()` gives the Assistants v2 shape written to disk; `from_dict()`
also reads the reference server's narrower shapes. Unknown fields are kept in `extra` so
that rewriting a record never drops what another writer put there."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self, TypeAlias

from .ids import new_id


class RunStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    INCOMPLETE = "incomplete"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_RUN


_TERMINAL_RUN = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.EXPIRED,
        RunStatus.INCOMPLETE,
    }
)


class RunStepStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self is not RunStepStatus.IN_PROGRESS


# The timestamp field each terminal status stamps, for runs and steps alike.
STATUS_TIMESTAMP_FIELD = {
    "completed": "completed_at",
    "failed": "failed_at",
    "cancelled": "cancelled_at",
    "expired": "expired_at",
}


def now() -> int:
    return int(time.time())


def _extra(data: dict[str, Any], known: set[str]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in known}


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(key): str(val) for key, val in value.items()}


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def text_content(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"value": text, "annotations": []}}]


@dataclass
class RunError:
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            code=str(data.get("code") or "server_error"), message=str(data.get("message", ""))
        )


@dataclass
class RunUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            completion_tokens=int(data.get("completion_tokens") or 0),
        )


@dataclass
class Thread:
    id: str
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _KNOWN = frozenset({"id", "object", "created_at", "metadata", "tool_resources"})

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.id,
            "object": "thread",
            "created_at": self.created_at,
            "metadata": dict(self.metadata),
            "tool_resources": {},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            id=str(data["id"]),
            created_at=int(data.get("created_at") or 0),
            metadata=_metadata(data.get("metadata")),
            extra=_extra(data, set(cls._KNOWN)),
        )


@dataclass
class ThreadMessage:
    id: str
    thread_id: str
    role: str
    content: list[dict[str, Any]]
    created_at: int
    run_id: str | None = None
    assistant_id: str | None = None
    status: str = "completed"
    metadata: dict[str, str] = field(default_factory=dict)
    # v2's incomplete_details.reason: run_cancelled, run_expired, run_failed...
    incomplete_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _KNOWN = frozenset(
        {
            "id", "object", "created_at", "thread_id", "status", "incomplete_details",
            "completed_at", "incomplete_at", "role", "content", "assistant_id", "run_id",
            "attachments", "metadata",
        }
    )  # fmt: skip

    @property
    def text(self) -> str:
        """The message's text blocks joined: what a person reads."""
        parts = []
        for block in self.content:
            if isinstance(block, dict) and block.get("type") == "text":
                text = block.get("text")
                value = text.get("value") if isinstance(text, dict) else text
                if isinstance(value, str):
                    parts.append(value)
        return "\n\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.id,
            "object": "thread.message",
            "created_at": self.created_at,
            "thread_id": self.thread_id,
            "status": self.status,
            "incomplete_details": (
                {"reason": self.incomplete_reason or "run_cancelled"}
                if self.status == "incomplete"
                else None
            ),
            "completed_at": self.created_at if self.status == "completed" else None,
            "incomplete_at": self.created_at if self.status == "incomplete" else None,
            "role": self.role,
            "content": self.content,
            "assistant_id": self.assistant_id,
            "run_id": self.run_id,
            "attachments": [],
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        content = data.get("content")
        if isinstance(content, str):
            content = text_content(content)
        return cls(
            id=str(data["id"]),
            thread_id=str(data.get("thread_id", "")),
            role=str(data.get("role", "user")),
            content=content if isinstance(content, list) else [],
            created_at=int(data.get("created_at") or 0),
            run_id=data.get("run_id") or None,
            assistant_id=data.get("assistant_id") or None,
            status=str(data.get("status") or "completed"),
            metadata=_metadata(data.get("metadata")),
            incomplete_reason=_incomplete_reason(data.get("incomplete_details")),
            extra=_extra(data, set(cls._KNOWN)),
        )


def _incomplete_reason(details: Any) -> str | None:
    reason = details.get("reason") if isinstance(details, dict) else None
    return reason if isinstance(reason, str) else None


# Why a reply was cut short, by how its run ended (v2's incomplete_details.reason).
INCOMPLETE_REASONS = {
    "cancelled": "run_cancelled",
    "expired": "run_expired",
    "failed": "run_failed",
    "incomplete": "run_failed",
}


@dataclass
class Run:
    id: str
    thread_id: str
    status: RunStatus
    model: str
    created_at: int
    instructions: str | None = None
    assistant_id: str | None = None
    started_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelled_at: int | None = None
    expired_at: int | None = None
    last_error: RunError | None = None
    usage: RunUsage | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _KNOWN = frozenset(
        {
            "id", "object", "created_at", "thread_id", "assistant_id", "status",
            "required_action", "last_error", "expires_at", "started_at", "cancelled_at",
            "failed_at", "completed_at", "expired_at", "incomplete_details", "model",
            "instructions", "tools", "metadata", "usage",
        }
    )  # fmt: skip

    @property
    def ended_at(self) -> int | None:
        return self.completed_at or self.failed_at or self.cancelled_at or self.expired_at

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.id,
            "object": "thread.run",
            "created_at": self.created_at,
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "status": self.status.value,
            "required_action": None,
            "last_error": self.last_error.to_dict() if self.last_error else None,
            "expires_at": None,
            "started_at": self.started_at,
            "cancelled_at": self.cancelled_at,
            "failed_at": self.failed_at,
            "completed_at": self.completed_at,
            "expired_at": self.expired_at,
            "incomplete_details": None,
            "model": self.model,
            "instructions": self.instructions,
            "tools": [],
            "metadata": dict(self.metadata),
            "usage": self.usage.to_dict() if self.usage else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        error = data.get("last_error")
        usage = data.get("usage")
        return cls(
            id=str(data["id"]),
            thread_id=str(data.get("thread_id", "")),
            status=RunStatus(data["status"]),
            model=str(data.get("model") or ""),
            created_at=int(data.get("created_at") or 0),
            instructions=data.get("instructions"),
            assistant_id=data.get("assistant_id") or None,
            started_at=_optional_int(data.get("started_at")),
            completed_at=_optional_int(data.get("completed_at")),
            failed_at=_optional_int(data.get("failed_at")),
            cancelled_at=_optional_int(data.get("cancelled_at")),
            expired_at=_optional_int(data.get("expired_at")),
            last_error=RunError.from_dict(error) if isinstance(error, dict) else None,
            usage=RunUsage.from_dict(usage) if isinstance(usage, dict) else None,
            metadata=_metadata(data.get("metadata")),
            extra=_extra(data, set(cls._KNOWN)),
        )


@dataclass
class RunStep:
    id: str
    run_id: str
    thread_id: str
    type: str
    status: RunStepStatus
    created_at: int
    assistant_id: str | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelled_at: int | None = None
    expired_at: int | None = None
    last_error: RunError | None = None
    step_details: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _KNOWN = frozenset(
        {
            "id", "object", "created_at", "assistant_id", "thread_id", "run_id", "type",
            "step_type", "status", "step_details", "last_error", "error", "expired_at",
            "cancelled_at", "failed_at", "completed_at", "metadata", "usage",
        }
    )  # fmt: skip

    @property
    def message_id(self) -> str | None:
        creation = self.step_details.get("message_creation")
        return creation.get("message_id") if isinstance(creation, dict) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.id,
            "object": "thread.run.step",
            "created_at": self.created_at,
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "type": self.type,
            "status": self.status.value,
            "step_details": self.step_details,
            "last_error": self.last_error.to_dict() if self.last_error else None,
            "expired_at": self.expired_at,
            "cancelled_at": self.cancelled_at,
            "failed_at": self.failed_at,
            "completed_at": self.completed_at,
            "metadata": {},
            "usage": None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        step_type = str(data.get("type") or data.get("step_type") or "message_creation")
        error = data.get("last_error")
        if isinstance(error, dict):
            last_error: RunError | None = RunError.from_dict(error)
        elif isinstance(data.get("error"), str):  # the reference stores a bare string
            last_error = RunError(code="server_error", message=data["error"])
        else:
            last_error = None
        details = data.get("step_details")
        if not isinstance(details, dict):
            details = {}
        if "message_id" in details and "message_creation" not in details:
            # The reference's {message_id} becomes v2's nested message_creation object.
            details = {"type": "message_creation", "message_creation": {**details}}
        if not details:
            details = {"type": step_type}
            if step_type == "message_creation":
                details["message_creation"] = {"message_id": None}
            else:
                details["tool_calls"] = []
        return cls(
            id=str(data["id"]),
            run_id=str(data.get("run_id", "")),
            thread_id=str(data.get("thread_id", "")),
            type=step_type,
            status=RunStepStatus(data["status"]),
            created_at=int(data.get("created_at") or 0),
            assistant_id=data.get("assistant_id") or None,
            completed_at=_optional_int(data.get("completed_at")),
            failed_at=_optional_int(data.get("failed_at")),
            cancelled_at=_optional_int(data.get("cancelled_at")),
            expired_at=_optional_int(data.get("expired_at")),
            last_error=last_error,
            step_details=details,
            extra=_extra(data, set(cls._KNOWN)),
        )


def new_thread(metadata: dict[str, str] | None = None) -> Thread:
    return Thread(id=new_id("thread"), created_at=now(), metadata=dict(metadata or {}))


def new_message(
    thread_id: str,
    role: str,
    text: str,
    *,
    message_id: str | None = None,
    run_id: str | None = None,
    assistant_id: str | None = None,
    status: str = "completed",
    metadata: dict[str, str] | None = None,
) -> ThreadMessage:
    return ThreadMessage(
        id=message_id or new_id("msg"),
        thread_id=thread_id,
        role=role,
        content=text_content(text),
        created_at=now(),
        run_id=run_id,
        assistant_id=assistant_id,
        status=status,
        metadata=dict(metadata or {}),
    )


def new_run(
    thread_id: str,
    *,
    model: str = "echo",
    instructions: str | None = None,
    assistant_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Run:
    return Run(
        id=new_id("run"),
        thread_id=thread_id,
        status=RunStatus.QUEUED,
        model=model,
        created_at=now(),
        instructions=instructions,
        assistant_id=assistant_id,
        metadata=dict(metadata or {}),
    )


def new_step(
    thread_id: str,
    run_id: str,
    *,
    type: str = "message_creation",  # noqa: A002 - v2's field name
    assistant_id: str | None = None,
    message_id: str | None = None,
) -> RunStep:
    """A new step; a message_creation step may name up front the message it will write."""
    details: dict[str, Any] = {"type": type}
    if type == "message_creation":
        details["message_creation"] = {"message_id": message_id}
    else:
        details["tool_calls"] = []
    return RunStep(
        id=new_id("step"),
        run_id=run_id,
        thread_id=thread_id,
        type=type,
        status=RunStepStatus.IN_PROGRESS,
        created_at=now(),
        assistant_id=assistant_id,
        step_details=details,
    )


@dataclass(frozen=True, order=True)
class RunRef:
    """Names a run across the store: what the work queue holds."""

    run_id: str
    thread_id: str


@dataclass(frozen=True)
class Lease:
    """A worker's claim on a run, valid until `expires_at` unless renewed."""

    worker_id: str
    expires_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "expires_at": self.expires_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(worker_id=str(data["worker_id"]), expires_at=float(data["expires_at"]))


@dataclass(frozen=True)
class WorkerHeartbeat:
    """What a run worker last said about itself; `seen_at` tells whether it lives."""

    worker_id: str
    host: str
    pid: int
    backend: str
    concurrency: int
    running: int
    started_at: float
    seen_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "host": self.host,
            "pid": self.pid,
            "backend": self.backend,
            "concurrency": self.concurrency,
            "running": self.running,
            "started_at": self.started_at,
            "seen_at": self.seen_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            worker_id=str(data["worker_id"]),
            host=str(data.get("host", "")),
            pid=int(data.get("pid", 0)),
            backend=str(data.get("backend", "")),
            concurrency=int(data.get("concurrency", 0)),
            running=int(data.get("running", 0)),
            started_at=float(data.get("started_at", 0)),
            seen_at=float(data["seen_at"]),
        )


@dataclass(frozen=True)
class Draft:
    """What a running run has produced so far, and the ID its message will have."""

    text: str
    message_id: str | None = None


# What ThreadStore.run_version and messages_version compare: the device, inode, change
# times and size of each file or directory watched (None where there is none).
FilesVersion: TypeAlias = tuple[tuple[int, int, int, int, int] | None, ...]


@dataclass(frozen=True)
class RunView:
    """Everything a run page shows about a run, read together (ThreadStore.run_view)."""

    run: Run
    steps: list[RunStep]
    draft: Draft | None
    # ThreadStore.run_version just before the read (None: it could not vouch). Two views
    # of one run are equal when what they show is, whatever their versions.
    version: FilesVersion | None = field(default=None, compare=False)
