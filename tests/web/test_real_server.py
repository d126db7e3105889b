"""Threadsite under real gunicorn, as `make run` starts it, talked to over HTTP."""

from __future__ import annotations

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


@pytest.fixture
def gunicorn(data_dir: Path, tmp_path: Path) -> Iterator[str]:
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
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, process, log)
        yield base_url
    finally:
        assert stop(process) == 0, log.read_text()


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


def status_of(browser: Any, url: str) -> tuple[int, str]:
    """Each call is a new connection, so the kernel spreads them over the processes."""
    try:
        with browser.open(url) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.headers.get("Location", "")


def answering_pids(log: Path, path: str) -> set[str]:
    """The worker processes that answered GET `path`, from the access log's last field."""
    line = rf'"GET {re.escape(path)} HTTP/1\.1" \d+ \S+ \S+ <(\d+)>'
    return set(re.findall(line, log.read_text()))


def test_account_changes_and_sign_outs_reach_every_server_process(
    gunicorn: str, data_dir: Path, tmp_path: Path
) -> None:
    """Each process keeps signed-in users in memory (threadsite/auth_cache.py) and reads
    sessions through files they share: a change made by a command, or a sign-out in one
    process, holds in all of them at the next request."""
    from stores import ThreadStore, new_thread

    password = re.search(r"with password: (\S+)", manage(data_dir, "ensure_staff")).group(1)
    thread = ThreadStore(data_dir / "threads").create_thread(new_thread())
    path = f"/threads/{thread.id}/"
    log = tmp_path / "gunicorn.log"
    side_by_side = ThreadPoolExecutor(max_workers=8)

    def answers(browser: Any, count: int = 16) -> list[tuple[int, str]]:
        return list(side_by_side.map(lambda _: status_of(browser, gunicorn + path), range(count)))

    try:
        browser, jar = sign_in(gunicorn, "admin", password)
        # Both processes load the user: side by side requests until each has answered.
        for _ in range(25):
            assert all(code == 200 and 'id="start-run"' in body for code, body in answers(browser))
            if len(answering_pids(log, path)) == 2:
                break
        assert len(answering_pids(log, path)) == 2

        manage(data_dir, "adduser", "admin", "--role", "viewer")
        read_only = answers(browser)
        assert all(code == 200 and 'id="start-run"' not in body for code, body in read_only)

        manage(data_dir, "deactivate", "admin")
        assert set(answers(browser)) == {(302, f"/accounts/login/?next={path}")}

        # Signing out in one process ends the session in all of them, even for a copy
        # of its cookie kept elsewhere.
        manage(data_dir, "adduser", "admin", "--role", "staff")
        browser, jar = sign_in(gunicorn, "admin", password)
        copied = urllib.request.build_opener(NoRedirect)
        copied.addheaders = [("Cookie", "; ".join(f"{c.name}={c.value}" for c in jar))]
        assert {code for code, _ in answers(copied)} == {200}
        token = next(c.value for c in jar if c.name == "csrftoken")
        sign_out = urllib.request.Request(
            f"{gunicorn}/accounts/logout/",
            data=urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode(),
            headers={"Referer": f"{gunicorn}/"},
        )
        with pytest.raises(urllib.error.HTTPError) as signed_out:
            browser.open(sign_out)
        assert signed_out.value.code == 302
        assert {code for code, _ in answers(copied)} == {302}
    finally:
        side_by_side.shutdown()


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
