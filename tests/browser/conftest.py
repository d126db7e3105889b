from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import STDOUT, Popen, TimeoutExpired
from typing import IO

import pytest
from playwright.sync_api import Page, expect

from stores import ThreadStore

# Browsers cannot be downloaded here: drive Debian's Chromium (`make test` installs it).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not CHROMIUM.exists():
        pytest.fail(f"The browser tests need Chromium at {CHROMIUM}: apt-get install chromium")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


# ------------------------------------------------------------------ run workers, sign-in

REPO = Path(__file__).resolve().parents[2]
WORKER_START_SECONDS = 30.0


@pytest.fixture
def run_worker(tmp_path: Path, threadsite_store_root: Path) -> Iterator[Callable[..., Popen]]:
    """Start `manage.py runworker` on this test's store: run_worker(echo_delay=0.3).

    The worker reads THREADSITE_DATA_DIR=tmp_path, whose "threads" directory is the store
    root the live server uses. Returns once the worker's first heartbeat is on disk; every
    worker started is stopped at teardown (its log is in tmp_path for a failing test)."""
    started: list[tuple[Popen, IO[bytes]]] = []

    def start(*, echo_delay: float = 0.05, concurrency: int = 2) -> Popen:
        env = {
            **os.environ,
            "THREADSITE_DATA_DIR": str(tmp_path),
            "THREADSITE_BACKEND": "echo",
            "THREADSITE_ECHO_DELAY": str(echo_delay),
            "THREADSITE_WORKER_SHUTDOWN_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
        log_path = tmp_path / f"worker-{len(started)}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed at teardown
        process = Popen(
            [sys.executable, "manage.py", "runworker", "--concurrency", str(concurrency)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=STDOUT,
        )
        started.append((process, log))
        store = ThreadStore(threadsite_store_root)
        deadline = time.monotonic() + WORKER_START_SECONDS
        while not any(beat.pid == process.pid for beat in store.heartbeats()):
            if process.poll() is not None:
                pytest.fail(f"The run worker exited early:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"The run worker sent no heartbeat:\n{log_path.read_text()}")
            time.sleep(0.05)  # polling the disk for the heartbeat, not waiting blindly
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@pytest.fixture
def signed_in_page(page: Page, live_server, staff_user, password: str) -> Page:
    """The browser page, signed in as a staff member through the login form."""
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(staff_user.get_username())
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return page
