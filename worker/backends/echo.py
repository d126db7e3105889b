"""The built-in model: replies with the thread's last user message, word by word.

Deterministic and dependency-free, so demos, tests and benchmarks need nothing else;
the delay between words makes streaming and cancellation visible.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

from . import ModelRequest, Usage


class EchoBackend:
    name = "echo"

    def __init__(self, *, delay_seconds: float) -> None:
        self.delay_seconds = delay_seconds

    def model_for(self, run_model: str) -> str:
        return run_model or "echo"

    def start(self, request: ModelRequest) -> EchoReply:
        return EchoReply(request, self.delay_seconds)


def echo_reply_text(request: ModelRequest) -> str:
    """The reply the echo model gives: a pure function of the last user message."""
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    if not last_user.strip():
        return "Echo: (there is no user message to echo yet)"
    return f"Echo: {last_user}"


class EchoReply:
    def __init__(self, request: ModelRequest, delay_seconds: float) -> None:
        self._text = echo_reply_text(request)
        self._delay = delay_seconds
        self._closed = threading.Event()
        self.usage: Usage | None = None
        self._prompt_tokens = sum(len(m.content.split()) for m in request.messages)

    def __iter__(self) -> Iterator[str]:
        # Words with the whitespace that follows them, so the deltas join back exactly.
        words = re.findall(r"\S+\s*", self._text) or [self._text]
        for index, word in enumerate(words):
            if index and self._delay and self._closed.wait(self._delay):
                return
            if self._closed.is_set():
                return
            yield word
        self.usage = Usage(prompt_tokens=self._prompt_tokens, completion_tokens=len(words))

    def close(self) -> None:
        self._closed.set()
