"""A small OpenAI-compatible chat completions server for the worker tests.

`POST /v1/chat/completions` only. What it does is chosen by the requested model name
(see MODELS), so one server serves every scenario and each run picks its own. It
accepts only `Authorization: Bearer <api_key>` (401 otherwise) and records every request
it receives, so tests can check what the worker sent.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The reply of the streaming models, one delta per chunk, and the usage they report.
OK_DELTAS = ["Hello", " from", " the", " fake", " model."]
OK_TEXT = "".join(OK_DELTAS)
OK_USAGE = {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22}

SLOW_CHUNK_SECONDS = 0.2  # "fake-slow" sends one word this often...
SLOW_CHUNKS = 150  # ...this many times (30 s: far longer than any test waits)
HANG_SECONDS = 30  # "fake-hang" holds the request this long (or until the server stops)

ERROR_500_MESSAGE = "The fake model crashed while loading its weights."
STREAM_ERROR_MESSAGE = "The fake model ran out of memory mid-reply."

MODELS = {
    "fake-ok*": "streams OK_DELTAS as SSE, usage in the last chunk, then [DONE]",
    "fake-slow": "streams 'word<n> ' every SLOW_CHUNK_SECONDS; notices the client leaving",
    "fake-429*": "answers 429 rate limit exceeded",
    "fake-500": "answers 500 with ERROR_500_MESSAGE",
    "fake-401-leaky": "answers 401 quoting the API key it was given, as some providers do",
    "fake-500-leaky": "answers 500 with a message quoting the Authorization header it got",
    "fake-hang": "reads the request and never answers",
    "fake-malformed": "answers 200 with an SSE event whose data is not JSON",
    "fake-stream-error": "streams one chunk, then an SSE error event (STREAM_ERROR_MESSAGE)",
    "fake-empty": "streams no text at all, only [DONE]",
}


@dataclass
class Received:
    """One request as the server saw it."""

    path: str
    authorization: str | None
    body: dict[str, Any]
    # How a streamed reply ended: "done" (all sent), "client-closed" (the client went away
    # mid-stream), or "" while it is still being sent / for non-streamed answers.
    outcome: str = ""
    chunks_sent: int = 0
    closed_at: float | None = None

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []


@dataclass
class FakeModelServer:
    api_key: str
    requests: list[Received] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "the server is not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()  # releases hanging and slow handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def received(self, model: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if model is None or r.model == model]

    def _record(self, request: Received) -> None:
        with self._lock:
            self.requests.append(request)


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeModel/1.0"
    # HTTP/1.0: a streamed reply ends when the connection closes; no chunked framing.
    protocol_version = "HTTP/1.0"

    @property
    def fake(self) -> FakeModelServer:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep the test output clean

    def do_GET(self) -> None:  # noqa: N802
        self._json(404, _error("Not found.", "invalid_request_error"))

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        received = Received(
            path=self.path,
            authorization=self.headers.get("Authorization"),
            body=body if isinstance(body, dict) else {},
        )
        self.fake._record(received)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, _error(f"No route {self.path}.", "invalid_request_error"))
            return
        if received.authorization != f"Bearer {self.fake.api_key}":
            self._json(401, _error("Incorrect API key provided.", "invalid_request_error"))
            return
        model = received.model
        if model.startswith("fake-ok") or model in {"fake-slow", "fake-stream-error", "fake-empty"}:
            self._stream(received)
        elif model.startswith("fake-429"):
            self._json(429, _error("Rate limit reached for fake-429.", "requests"))
        elif model == "fake-500":
            self._json(500, _error(ERROR_500_MESSAGE, "server_error"))
        elif model == "fake-401-leaky":
            given = (received.authorization or "").removeprefix("Bearer ")
            self._json(401, _error(f"Incorrect API key provided: {given}.", "invalid_api_key"))
        elif model == "fake-500-leaky":
            quoted = f"upstream rejected Authorization: {received.authorization}"
            self._json(500, _error(f"Gateway failure ({quoted}).", "server_error"))
        elif model == "fake-hang":
            self.fake._stopping.wait(HANG_SECONDS)
        elif model == "fake-malformed":
            self._start_sse()
            self._send_event(b'data: {"id": "chatcmpl-fake", "choices": [{"delta": \n\n')
            self._send_event(b"data: [DONE]\n\n")
        else:
            self._json(404, _error(f"The model {model!r} does not exist.", "model_not_found"))

    # ------------------------------------------------------------------ replies

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.flush()

    def _send_event(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _stream(self, received: Received) -> None:
        model = received.model
        self._start_sse()
        try:
            if model.startswith("fake-ok"):
                for delta in OK_DELTAS:
                    self._send_event(_chunk(model, {"content": delta}))
                    received.chunks_sent += 1
                self._send_event(_chunk(model, {}, finish_reason="stop"))
                self._send_event(_chunk(model, None, usage=OK_USAGE))
            elif model == "fake-slow":
                for index in range(SLOW_CHUNKS):
                    self._send_event(_chunk(model, {"content": f"word{index} "}))
                    received.chunks_sent += 1
                    if self.fake._stopping.wait(SLOW_CHUNK_SECONDS):
                        return
            elif model == "fake-stream-error":
                self._send_event(_chunk(model, {"content": "Partial"}))
                received.chunks_sent += 1
                error = _error(STREAM_ERROR_MESSAGE, "server_error")
                self._send_event(b"data: " + json.dumps(error).encode() + b"\n\n")
            self._send_event(b"data: [DONE]\n\n")
            received.outcome = "done"
        except OSError:  # BrokenPipeError, ConnectionResetError: the client went away
            received.outcome = "client-closed"
            received.closed_at = time.monotonic()


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _chunk(
    model: str,
    delta: dict[str, Any] | None,
    *,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> bytes:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    )
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
