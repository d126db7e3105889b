"""Model backends: what a worker calls to produce an assistant's reply, streaming.

A backend's `start(request)` returns a ReplyStream: iterating it yields text deltas;
`usage` is filled in when the backend reports it; `close()` may be called from another
thread to stop a reply early (a cancel), and makes iteration end soon after.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..config import ConfigurationError, WorkerConfig


@dataclass(frozen=True)
class ChatMessage:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True)
class ModelRequest:
    model: str
    messages: list[ChatMessage] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


class BackendError(Exception):
    """The model call failed. `code` is the v2 last_error code; `message` is for an
    operator to act on and never contains credentials."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ReplyStream(Protocol):
    usage: Usage | None

    def __iter__(self) -> Iterator[str]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def start(self, request: ModelRequest) -> ReplyStream: ...

    def model_for(self, run_model: str) -> str: ...


def make_backend(config: WorkerConfig) -> Backend:
    """The configured backend, or ConfigurationError saying what to fix."""
    if config.backend == "echo":
        from .echo import EchoBackend

        return EchoBackend(delay_seconds=config.echo_delay_seconds)
    if config.backend == "openai":
        from .openai_chat import OpenAIChatBackend

        return OpenAIChatBackend.from_config(config)
    raise ConfigurationError(
        f"THREADSITE_BACKEND must be 'echo' or 'openai', not {config.backend!r}."
    )


__all__ = [
    "Backend",
    "BackendError",
    "ChatMessage",
    "ConfigurationError",
    "ModelRequest",
    "ReplyStream",
    "Usage",
    "make_backend",
]
