"""Threadsite under real gunicorn, as `make run` starts it, talked to over HTTP."""

from __future__ import annotations

import http.client
import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "THREADSITE_"))}
    environ.update(THREADSITE_DATA_DIR=str(data_dir), **extra)
    return environ


def manage(data_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=server_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def wait_until_healthy(base_url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200 and response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"server never became healthy:\n{log.read_text()}")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, *, group: bool = False) -> int:
    if process.poll() is None:
        if group:
            os.killpg(process.pid, sig)  # as a terminal does on Ctrl-C
        else:
            process.send_signal(sig)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("server did not stop within 20s")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    manage(path, "migrate", "--noinput", "--verbosity", "0")
    return path


@contextmanager
def serving(data_dir: Path, log: Path, *options: str) -> Iterator[str]:
    """gunicorn with the project's configuration (and `options`); yields its base URL."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "threadsite/gunicorn.conf.py", *options],
            cwd=BASE_DIR,
            env=server_env(data_dir, PORT=str(port)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, process, log)
        yield base_url
    finally:
        assert stop(process) == 0, log.read_text()


@pytest.fixture
def gunicorn(data_dir: Path, tmp_path: Path) -> Iterator[str]:
    with serving(data_dir, tmp_path / "gunicorn.log") as base_url:
        yield base_url


def test_gunicorn_serves_pages_static_files_and_sign_in(gunicorn: str, data_dir: Path):
    output = manage(data_dir, "ensure_staff")
    password = re.search(r"with password: (\S+)", output).group(1)
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)

    # Signed out, the dashboard sends you to the login page.
    with pytest.raises(urllib.error.HTTPError) as redirect:
        browser.open(f"{gunicorn}/")
    assert redirect.value.code == 302
    assert redirect.value.headers["Location"] == "/accounts/login/?next=/"

    with browser.open(f"{gunicorn}/accounts/login/") as response:
        login_html = response.read().decode()
    assert response.status == 200
    assert "<h1>Sign in</h1>" in login_html
    assert "Traceback" not in login_html

    # htmx and the stylesheet come through WhiteNoise, with DEBUG off.
    htmx_src = re.search(r'<script src="(/static/django_htmx/htmx-2[^"]*)"', login_html).group(1)
    with browser.open(f"{gunicorn}{htmx_src}") as response:
        assert response.status == 200
        assert "javascript" in response.headers["Content-Type"]
        assert b"htmx" in response.read()
    with browser.open(f"{gunicorn}/static/css/site.css") as response:
        assert response.headers["Content-Type"].startswith("text/css")

    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_html).group(1)
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": csrf, "username": "admin", "password": password, "next": "/"}
    ).encode()
    request = urllib.request.Request(
        f"{gunicorn}/accounts/login/", data=form, headers={"Referer": f"{gunicorn}/"}
    )
    with pytest.raises(urllib.error.HTTPError) as signed_in:
        browser.open(request)
    assert signed_in.value.code == 302
    assert signed_in.value.headers["Location"] == "/"

    with browser.open(f"{gunicorn}/threads/") as response:
        assert response.status == 200
        assert "No threads yet." in response.read().decode()

    # Unknown pages get the plain 404 page, never a debug page.
    with pytest.raises(urllib.error.HTTPError) as missing:
        browser.open(f"{gunicorn}/nowhere")
    assert missing.value.code == 404
    body = missing.value.read().decode()
    assert "<h1>Page not found</h1>" in body
    assert "Traceback" not in body


def test_serve_starts_gunicorn_and_one_ctrl_c_stops_everything(data_dir: Path, tmp_path: Path):
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=BASE_DIR,
            env=server_env(data_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process, log)
    finally:
        code = stop(process, signal.SIGINT, group=True)

    assert code == 0, log.read_text()
    assert f"Threadsite on http://127.0.0.1:{port}/" in log.read_text()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "gunicorn still listening after Ctrl-C"


# ------------------------------------------- sign-in state across server processes


def sign_in(base_url: str, username: str, password: str) -> tuple[Any, http.cookiejar.CookieJar]:
    """A browser-like opener signed in through the login form (redirects not followed)."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    with browser.open(f"{base_url}/accounts/login/") as response:
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.read().decode())
    form = {"csrfmiddlewaretoken": csrf.group(1), "username": username, "password": password}
    request = urllib.request.Request(
        f"{base_url}/accounts/login/",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Referer": f"{base_url}/"},
    )
    with pytest.raises(urllib.error.HTTPError) as signed_in:
        browser.open(request)
    assert signed_in.value.code == 302
    return browser, jar


class Pinned:
    """A keep-alive connection, which stays with the server process that accepted it."""

    def __init__(self, base_url: str) -> None:
        self.connection = http.client.HTTPConnection(urlsplit(base_url).netloc, timeout=10)

    def get(self, path: str, cookie: str = "") -> tuple[int, str]:
        """(status, body), or (status, Location) for a redirect."""
        self.connection.request("GET", path, headers={"Cookie": cookie})
        response = self.connection.getresponse()
        body = response.read().decode()
        return response.status, response.getheader("Location") or body

    def close(self) -> None:
        self.connection.close()


def one_connection_per_process(base_url: str, log: Path) -> list[Pinned]:
    """Keep-alive connections until each of the two processes holds one (at most 40):
    which process accepts a connection is the kernel's choice."""
    held: dict[str, Pinned] = {}
    spare: list[Pinned] = []
    for probe in range(40):
        connection = Pinned(base_url)
        assert connection.get(f"/healthz?probe={probe}")[0] == 200
        line = rf'"GET /healthz\?probe={probe} HTTP/1\.1" .* <(\d+)>$'
        deadline = time.monotonic() + 5
        while not (found := re.search(line, log.read_text(), re.MULTILINE)):
            assert time.monotonic() < deadline, "the access log never showed the request"
            time.sleep(0.01)
        if found.group(1) in held:
            spare.append(connection)  # kept open meanwhile: its process holds it
        else:
            held[found.group(1)] = connection
        if len(held) == 2:
            break
    for connection in spare:
        connection.close()
    assert len(held) == 2, "one process accepted all 40 connections"
    return list(held.values())


def test_account_changes_and_sign_outs_reach_every_server_process(
    gunicorn: str, data_dir: Path, tmp_path: Path
) -> None:
    """Each process keeps sessions and signed-in users in memory (threadsite/auth_cache.py):
    a change made by a command, or a sign-out through one process, holds in all of them
    at the next request."""
    from stores import ThreadStore, new_thread

    base_url, log = gunicorn, tmp_path / "gunicorn.log"
    password = re.search(r"with password: (\S+)", manage(data_dir, "ensure_staff")).group(1)
    thread = ThreadStore(data_dir / "threads").create_thread(new_thread())
    page = f"/threads/{thread.id}/"
    processes = one_connection_per_process(base_url, log)
    try:

        def answers(cookie: str) -> list[tuple[int, str]]:
            return [process.get(page, cookie) for process in processes]

        _, jar = sign_in(base_url, "admin", password)
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        # Each process reads the session and the user, and keeps them.
        assert all(code == 200 and 'id="start-run"' in body for code, body in answers(cookie))

        manage(data_dir, "adduser", "admin", "--role", "viewer")
        assert all(code == 200 and 'id="start-run"' not in body for code, body in answers(cookie))

        manage(data_dir, "deactivate", "admin")
        assert answers(cookie) == [(302, f"/accounts/login/?next={page}")] * 2

        # Signing out through one process ends the session in all of them, even for a
        # copy of its cookie kept elsewhere.
        manage(data_dir, "adduser", "admin", "--role", "staff")
        browser, jar = sign_in(base_url, "admin", password)
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        assert [code for code, _ in answers(cookie)] == [200, 200]
        token = next(c.value for c in jar if c.name == "csrftoken")
        sign_out = urllib.request.Request(
            f"{base_url}/accounts/logout/",
            data=urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode(),
            headers={"Referer": f"{base_url}/"},
        )
        with pytest.raises(urllib.error.HTTPError) as signed_out:
            browser.open(sign_out)
        assert signed_out.value.code == 302
        assert [code for code, _ in answers(cookie)] == [302, 302]
    finally:
        for process in processes:
            process.close()


def test_each_worker_loads_the_catalog_as_it_starts(data_dir: Path, tmp_path: Path) -> None:
    """Before any page asks for it: the first thread list of a restarted server does not
    wait for the journal to be replayed."""
    from stores import ThreadStore, new_thread

    store = ThreadStore(data_dir / "threads")
    for _ in range(3):
        store.create_thread(new_thread())
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "threadsite/gunicorn.conf.py"],
            cwd=BASE_DIR,
            env=server_env(data_dir, PORT=str(port)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + 20
        while log.read_text().count("Catalog of 3 threads loaded") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        assert stop(process) == 0, log.read_text()
