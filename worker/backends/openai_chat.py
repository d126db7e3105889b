"""Any server that speaks OpenAI chat completions: a hosted service, vLLM, Ollama,
llama.cpp's server. Streams the reply; maps failures to v2 `last_error` codes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import openai

from ..config import ConfigurationError, WorkerConfig
from . import BackendError, ModelRequest, Usage


class OpenAIChatBackend:
    name = "openai"

    def __init__(
        self, *, base_url: str, api_key: str, default_model: str, timeout_seconds: float
    ) -> None:
        self.base_url = base_url
        self.default_model = default_model
        self.timeout_seconds = timeout_seconds
        self._api_key = api_key
        self._client = openai.OpenAI(
            base_url=base_url,
            # Local servers (Ollama, llama.cpp) take no key, but the client insists on one.
            api_key=api_key or "unused",
            timeout=openai.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
            max_retries=0,  # a failed run says so; the operator decides to retry
        )

    @classmethod
    def from_config(cls, config: WorkerConfig) -> OpenAIChatBackend:
        if not config.model_base_url:
            raise ConfigurationError(
                "THREADSITE_BACKEND=openai needs THREADSITE_MODEL_BASE_URL, the address of an "
                "OpenAI-compatible server (for example http://127.0.0.1:11434/v1 for Ollama)."
            )
        if not config.model_base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"THREADSITE_MODEL_BASE_URL must start with http:// or https://, "
                f"not {config.model_base_url!r}."
            )
        if not config.model:
            raise ConfigurationError(
                "THREADSITE_BACKEND=openai needs THREADSITE_MODEL, the model to use when a run "
                "names none (for example gpt-4o-mini, or llama3.2 on Ollama)."
            )
        return cls(
            base_url=config.model_base_url,
            api_key=config.model_api_key,
            default_model=config.model,
            timeout_seconds=config.model_timeout_seconds,
        )

    def model_for(self, run_model: str) -> str:
        # "echo" is the dashboard's placeholder when no model was chosen.
        return run_model if run_model and run_model != "echo" else self.default_model

    def start(self, request: ModelRequest) -> OpenAIReply:
        return OpenAIReply(self, request)

    def error(self, error: Exception) -> BackendError:
        """A BackendError an operator can act on; never carries the API key."""
        where = f"the model server at {self.base_url}"
        if isinstance(error, openai.RateLimitError):
            result = BackendError(
                "rate_limit_exceeded",
                f"{where} refused the request: rate limit exceeded (HTTP 429). "
                "Wait, or raise the limit with the provider.",
            )
        elif isinstance(error, openai.APITimeoutError):
            result = BackendError(
                "server_error",
                f"{where} did not answer within {self.timeout_seconds:g} s "
                "(THREADSITE_MODEL_TIMEOUT_SECONDS).",
            )
        elif isinstance(error, openai.APIConnectionError):
            result = BackendError(
                "server_error", f"Could not connect to {where}: is it running and reachable?"
            )
        elif isinstance(error, openai.AuthenticationError):
            result = BackendError(
                "server_error",
                f"{where} rejected the API key (HTTP 401): check THREADSITE_MODEL_API_KEY.",
            )
        elif isinstance(error, openai.NotFoundError):
            result = BackendError(
                "server_error",
                f"{where} answered 404: check the model name and THREADSITE_MODEL_BASE_URL.",
            )
        elif isinstance(error, openai.APIStatusError):
            result = BackendError(
                "server_error",
                f"{where} failed with HTTP {error.status_code}: {_short(error.message)}",
            )
        elif isinstance(error, openai.APIError):  # an error event inside the stream
            result = BackendError(
                "server_error", f"{where} reported an error mid-reply: {_short(error.message)}"
            )
        else:
            result = BackendError(
                "server_error",
                f"{where} sent a reply that could not be understood ({type(error).__name__}).",
            )
        if self._api_key:
            result.message = result.message.replace(self._api_key, "[redacted]")
        return result


class OpenAIReply:
    def __init__(self, backend: OpenAIChatBackend, request: ModelRequest) -> None:
        self._backend = backend
        self._request = request
        self._stream: Any = None
        self._closed = threading.Event()
        self.usage: Usage | None = None

    def __iter__(self) -> Iterator[str]:
        produced = False
        try:
            self._stream = self._backend._client.chat.completions.create(
                model=self._request.model,
                messages=[{"role": m.role, "content": m.content} for m in self._request.messages],
                stream=True,
                stream_options={"include_usage": True},
            )
            if self._closed.is_set():
                self._stream.close()
                return
            for chunk in self._stream:
                if self._closed.is_set():
                    return
                if chunk.usage is not None:
                    self.usage = Usage(
                        prompt_tokens=chunk.usage.prompt_tokens or 0,
                        completion_tokens=chunk.usage.completion_tokens or 0,
                    )
                for choice in chunk.choices or ():
                    if choice.delta is not None and choice.delta.content:
                        produced = True
                        yield choice.delta.content
        except Exception as error:
            if self._closed.is_set():
                return  # closing the response from another thread interrupts the read
            raise self._backend.error(error) from None
        if not produced and not self._closed.is_set():
            raise BackendError(
                "server_error",
                f"The model server at {self._backend.base_url} answered without any text.",
            )

    def close(self) -> None:
        self._closed.set()
        stream = self._stream
        if stream is not None:
            # Best effort, from another thread: the reading thread then stops.
            with contextlib.suppress(Exception):
                stream.close()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
