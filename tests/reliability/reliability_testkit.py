"""Helpers for the reliability suites: a production-like site (gunicorn, run workers)
over a temporary data directory, an HTTP client that speaks both to the dashboard (with
a session and CSRF) and to the API (with a bearer key), bounded waits, and the figures
each suite reports for docs/reliability.md.

`make torture` sets THREADSITE_TORTURE=1, which raises the counts (see `scaled`).
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from stores import (
    Run,
    RunRef,
    RunStep,
    Thread,
    ThreadMessage,
    ThreadStore,
    new_message,
    new_run,
    new_step,
    new_thread,
)

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FIGURES = REPO_ROOT / "test-results" / "reliability-figures.json"

API_KEY = "ts_reliability_suite_key_0123456789abcd"
WRONG_KEY = "ts_reliability_suite_key_0123456789abce"
PASSWORD = "a sturdy horse battery staple"
STAFF, VIEWER = "ada", "li"
SECRET_KEY = "reliability-suite-secret-key-" + "x" * 40

START_SECONDS = 60
STOP_SECONDS = 20

TORTURE = os.environ.get("THREADSITE_TORTURE", "") == "1"


def scaled(normal: int, torture: int) -> int:
    """`normal` in `make test`, `torture` in `make torture`."""
    return torture if TORTURE else normal


# ------------------------------------------------------------------------ waiting


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------------ figures


def record_figures(section: str, **values: Any) -> None:
    """Keep this run's figures for one suite in test-results/reliability-figures.json."""
    FIGURES.parent.mkdir(exist_ok=True)
    try:
        data = json.loads(FIGURES.read_text())
    except (OSError, ValueError):
        data = {}
    data[section] = {**values, "torture": TORTURE, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    temp = FIGURES.with_suffix(".tmp")
    temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    temp.replace(FIGURES)


# -------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server process: none of ours leaks in, production-like
    settings (DEBUG off, HTTPS behind a proxy, a fixed secret key)."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "THREADSITE_", "OPENAI_", "GUNICORN_", "WEB_"))
    }
    environ.update(
        THREADSITE_DATA_DIR=str(data_dir),
        DJANGO_SECRET_KEY=SECRET_KEY,
        DJANGO_DEBUG="false",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        THREADSITE_HTTPS="true",
        THREADSITE_API_KEYS=API_KEY,
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    environ.update(extra)
    return environ


def manage(
    data_dir: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=clean_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SETUP_USERS = f"""
from django.contrib.auth.models import Group, User
viewers, _ = Group.objects.get_or_create(name="viewers")
User.objects.create_user({STAFF!r}, password={PASSWORD!r}, is_staff=True)
viewer = User.objects.create_user({VIEWER!r}, password={PASSWORD!r})
viewer.groups.add(viewers)
"""


_template: list[Path] = []


def prepare_data_dir(data_dir: Path) -> None:
    """The sign-in database, with a staff account and a viewer: made once per test run
    (two manage.py commands take seconds), then copied."""
    if not _template:
        template = Path(tempfile.mkdtemp(prefix="threadsite-auth-template-"))
        for args in (("migrate", "--noinput", "--verbosity", "0"), ("shell", "-c", SETUP_USERS)):
            result = manage(template, *args)
            assert result.returncode == 0, result.stderr
        _template.append(template)
        atexit.register(shutil.rmtree, template, True)
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(_template[0] / "auth.sqlite3", data_dir / "auth.sqlite3")


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_SECONDS)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def process_age(pid: int) -> float:
    """Seconds since the process started (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Site:
    """gunicorn and run workers over one data directory, stopped by `close()`."""

    root: Path
    web_workers: int = 2
    threads: int = 4
    wsgi_app: str | None = None  # a test-only entry point instead of threadsite.wsgi
    env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    web: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    _logs: list[Any] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def store_root(self) -> Path:
        return self.data_dir / "threads"

    @property
    def store(self) -> ThreadStore:
        return ThreadStore(self.store_root)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, name: str) -> Any:
        handle = (self.root / f"{name}.log").open("ab")
        self._logs.append(handle)
        return handle

    def start(self) -> Site:
        prepare_data_dir(self.data_dir)
        self.port = free_port()
        argv = [sys.executable, "-m", "gunicorn", "--config", "threadsite/gunicorn.conf.py"]
        if self.wsgi_app:
            argv += ["--pythonpath", str(HERE), self.wsgi_app]
        environ = clean_env(
            self.data_dir,
            PORT=str(self.port),
            WEB_CONCURRENCY=str(self.web_workers),
            GUNICORN_THREADS=str(self.threads),
            **self.env,
        )
        self.web = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=environ, stdout=self.log("web"), stderr=subprocess.STDOUT
        )
        self.wait_until_serving()
        return self

    def wait_until_serving(self) -> None:
        def healthy() -> bool:
            assert self.web is not None
            if self.web.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.web.returncode}:\n{self.read_log('web')}")
            try:
                reply = Client(self.base_url, timeout=2).get("/healthz")
            except (OSError, http.client.HTTPException):
                return False
            return reply.status == 200

        wait_for(healthy, START_SECONDS, "gunicorn to answer /healthz", interval=0.1)

    def web_worker_pids(self) -> list[int]:
        return children(self.web.pid) if self.web else []

    def start_worker(self, *, ready: bool = True, **env: str) -> subprocess.Popen:
        environ = clean_env(
            self.data_dir,
            THREADSITE_BACKEND="echo",
            THREADSITE_ECHO_DELAY="0.01",
            THREADSITE_RUN_LEASE_SECONDS="2",
            THREADSITE_WORKER_SHUTDOWN_SECONDS="0",
            THREADSITE_WORKER_CONCURRENCY="4",
            **{**self.worker_env, **env},
        )
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runworker"],
            cwd=REPO_ROOT,
            env=environ,
            stdout=self.log("workers"),
            stderr=subprocess.STDOUT,
        )
        self.workers.append(process)
        if ready:
            self.wait_for_heartbeat(process)
        return process

    def wait_for_heartbeat(self, process: subprocess.Popen) -> None:
        def beating() -> bool:
            if process.poll() is not None:
                pytest.fail(f"a run worker exited early:\n{self.read_log('workers')}")
            return any(beat.pid == process.pid for beat in self.store.heartbeats())

        wait_for(beating, START_SECONDS, "a run worker's first heartbeat")

    def live_workers(self) -> list[subprocess.Popen]:
        return [process for process in self.workers if process.poll() is None]

    def read_log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def close(self) -> None:
        for process in self.workers:
            stop_process(process)
        if self.web is not None:
            stop_process(self.web)
        for handle in self._logs:
            handle.close()


@contextlib.contextmanager
def running_site(root: Path, **options: Any) -> Iterator[Site]:
    site = Site(root, **options)
    try:
        yield site.start()
    finally:
        site.close()


# ------------------------------------------------------------------- HTTP clients


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased; repeated headers joined with "\n"
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


class Client:
    """One keep-alive connection to the site, as a browser behind the HTTPS proxy
    would use it (X-Forwarded-Proto: https), with its own cookies. Connection failures
    raise OSError or http.client.HTTPException; a fresh connection is opened next time."""

    def __init__(
        self, base_url: str, *, timeout: float = 10, key: str | None = None, https: bool = True
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.timeout = timeout
        self.key = key
        self.https = https
        self.cookies: dict[str, str] = {}
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = {"Host": f"{self.host}:{self.port}"}
        if self.https:
            all_headers["X-Forwarded-Proto"] = "https"
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.key is not None:
            all_headers["Authorization"] = f"Bearer {self.key}"
        all_headers.update(headers or {})
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._conn.request(method, path, body=body, headers=all_headers)
            response = self._conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        found: dict[str, str] = {}
        for name, value in response.getheaders():
            name = name.lower()
            found[name] = f"{found[name]}\n{value}" if name in found else value
            if name == "set-cookie":
                cookie_name, _, rest = value.partition("=")
                self.cookies[cookie_name.strip()] = rest.split(";", 1)[0]
        if response.will_close:
            self.close()
        return Reply(response.status, found, data)

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, headers=headers)

    # ---------------------------------------------------------------- the API

    def api(self, method: str, path: str, payload: Any = None) -> Reply:
        body = None if payload is None else json.dumps(payload).encode()
        return self.request(
            method, f"/v1{path}", body=body, headers={"Content-Type": "application/json"}
        )

    # ---------------------------------------------------------- the dashboard

    def origin(self) -> str:
        return f"{'https' if self.https else 'http'}://{self.host}:{self.port}"

    def form(self, path: str, fields: dict[str, str], *, htmx: bool = False) -> Reply:
        """POST a form with the CSRF token, as the page would."""
        data = {"csrfmiddlewaretoken": self.cookies.get("csrftoken", ""), **fields}
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": self.origin(),
            "Referer": self.origin() + "/",
            "X-CSRFToken": self.cookies.get("csrftoken", ""),
        }
        if htmx:
            headers["HX-Request"] = "true"
        return self.request("POST", path, urllib.parse.urlencode(data).encode(), headers)

    def sign_in(self, username: str, password: str = PASSWORD) -> Reply:
        """Sign in through the form; the answer is a 302 when it worked."""
        page = self.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if page.status != 200 or token is None:
            return page
        return self.form(
            "/accounts/login/",
            {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password},
        )


def signed_in(base_url: str, username: str = STAFF) -> Client:
    client = Client(base_url)
    reply = client.sign_in(username)
    assert reply.status == 302, (reply.status, reply.text[:500])
    return client


def api_client(base_url: str, key: str = API_KEY, timeout: float = 10) -> Client:
    return Client(base_url, key=key, timeout=timeout)


def finished_run(store: ThreadStore) -> tuple[Thread, ThreadMessage, Run, RunStep]:
    """A thread with a message and a run that a worker claimed, stepped and completed:
    (thread, its first message, the run, its step)."""
    thread = store.create_thread(new_thread({"k": "v"}))
    message = store.append_message(thread.id, new_message(thread.id, "user", "hello"))
    run = store.create_run(thread.id, new_run(thread.id))
    store.claim_run(
        RunRef(run_id=run.id, thread_id=thread.id), worker_id="w", lease_seconds=60, run_timeout=60
    )
    step = store.append_step(thread.id, run.id, new_step(thread.id, run.id))
    store.complete_run(thread.id, run.id, new_message(thread.id, "assistant", "hi", run_id=run.id))
    return thread, message, run, step
