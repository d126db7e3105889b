"""A real Threadsite for the benchmark: a data directory with a signed-in account, and
gunicorn serving it on 127.0.0.1 with the project's own gunicorn.conf.py."""

from __future__ import annotations

import http.cookiejar
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
GUNICORN_CONF = BASE_DIR / "threadsite" / "gunicorn.conf.py"
USERNAME = "bench"


class BenchError(Exception):
    """The benchmark could not measure (as opposed to a target being missed)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def site_env(data_dir: Path, *, settings: str = "", **extra: str) -> dict[str, str]:
    """The environment of the bench's processes: the caller's, minus any Threadsite or
    Django settings, plus the bench's data directory (and `settings`, a settings module
    to try instead of threadsite.settings)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "THREADSITE_"))}
    environ.update(THREADSITE_DATA_DIR=str(data_dir), **extra)
    if settings:
        environ["DJANGO_SETTINGS_MODULE"] = settings
    return environ


def manage(data_dir: Path, *args: str, stdin: str | None = None, settings: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=site_env(data_dir, settings=settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def prepare_data_dir(data_dir: Path, settings: str = "") -> str:
    """The sign-in database and a staff account; returns the account's password."""
    data_dir.mkdir(parents=True, exist_ok=True)
    manage(data_dir, "migrate", "--noinput", "--verbosity", "0", settings=settings)
    password = secrets.token_urlsafe(18)
    manage(
        data_dir,
        "adduser",
        USERNAME,
        "--role",
        "staff",
        "--password-stdin",
        stdin=password,
        settings=settings,
    )
    return password


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@dataclass
class Server:
    """gunicorn serving one data directory; `cookie` is a signed-in session."""

    data_dir: Path
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)  # for this server only
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    cookie: str = ""
    started_at: float = 0.0
    settings: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, password: str, *, settings: str = "") -> None:
        self.port = free_port()
        self.settings = settings
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(GUNICORN_CONF),
            "--bind",
            f"127.0.0.1:{self.port}",
            *self.extra_args,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=BASE_DIR,
                env=site_env(self.data_dir, settings=self.settings, **self.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_healthy()
        self.started_at = time.monotonic()
        self.cookie = self._sign_in(password)

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"gunicorn never answered /healthz:\n{self.log_path.read_text()[-3000:]}")

    def _sign_in(self, password: str) -> str:
        """Sign in through the login form, as a person would; returns the Cookie header."""
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
        with browser.open(f"{self.base_url}/accounts/login/", timeout=10) as response:
            page = response.read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if token is None:
            raise BenchError("the login page carries no CSRF token")
        form = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token.group(1), "username": USERNAME, "password": password}
        ).encode()
        request = urllib.request.Request(
            f"{self.base_url}/accounts/login/", data=form, headers={"Referer": self.base_url}
        )
        try:
            browser.open(request, timeout=10)
        except urllib.error.HTTPError as answer:
            if answer.code != 302:
                raise BenchError(f"signing in answered {answer.code}") from None
        else:
            raise BenchError("signing in did not redirect: wrong password?")
        return "; ".join(f"{c.name}={c.value}" for c in jar)

    def get(self, path: str, *, htmx: bool = False) -> tuple[int, str]:
        """One request with the session, no redirects followed: (status, body)."""
        headers = {"Cookie": self.cookie}
        if htmx:
            headers["HX-Request"] = "true"
        request = urllib.request.Request(self.base_url + path, headers=headers)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as answer:
            return answer.code, answer.read().decode(errors="replace")
        except OSError as error:
            raise BenchError(f"GET {path} failed: {error}\n{self.log_tail()}") from None

    def log_tail(self) -> str:
        try:
            return "gunicorn's log ends with:\n" + self.log_path.read_text()[-3000:]
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """gunicorn's worker processes (the master's children)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def describe(self) -> str:
        extra = f" {shlex.join(self.extra_args)}" if self.extra_args else ""
        return f"gunicorn --config threadsite/gunicorn.conf.py{extra}"


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
