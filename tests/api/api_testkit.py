"""Helpers shared by the API tests: the live server's handle, its processes, bounded
waits. (A module of its own: test modules cannot import conftest.py.)"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from stores import ThreadStore

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "ts_test_key_for_the_api_suite_0123456789"
START_SECONDS = 30
STOP_SECONDS = 15


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return value


@dataclass
class LiveApi:
    base_url: str  # http://127.0.0.1:PORT
    data_dir: Path

    @property
    def store(self) -> ThreadStore:
        return ThreadStore(self.data_dir / "threads")

    def request(
        self, method: str, path: str, body: Any = None, *, key: str | None = API_KEY
    ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, parsed JSON) of one request to /v1`path`, errors included."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            f"{self.base_url}/v1{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())

    def open_stream(self, path: str, body: Any) -> http.client.HTTPResponse:
        """An event stream, left open for the caller to read and close."""
        request = urllib.request.Request(
            f"{self.base_url}/v1{path}",
            data=json.dumps({**body, "stream": True}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        )
        return urllib.request.urlopen(request, timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "THREADSITE_", "OPENAI_", "GUNICORN_", "WEB_"))
    }
    environ.update(THREADSITE_DATA_DIR=str(data_dir), **extra)
    return environ


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_serving(
    base_url: str, store: ThreadStore, processes: list[subprocess.Popen[bytes]], log: Path
) -> None:
    """Until gunicorn answers /healthz and the worker has sent a heartbeat."""
    deadline = time.monotonic() + START_SECONDS
    healthy = False
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            pytest.fail(f"a server process exited early:\n{log.read_text()}")
        if not healthy:
            try:
                with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                    healthy = response.status == 200
            except OSError:
                pass
        if healthy and store.heartbeats():
            return
        time.sleep(0.1)
    pytest.fail(f"gunicorn or the run worker never started:\n{log.read_text()}")
