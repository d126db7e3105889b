"""Fixtures for the run worker tests: real `manage.py runworker` processes over a
temporary store (the helpers are in worker_testkit.py, the fake OpenAI-compatible model
server in fake_model_server.py).

Every worker a test starts is killed at teardown, every wait is bounded, and every
test has a hard time limit, so a hang fails a test instead of stalling the suite.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

# The helper modules live next to this file: make them importable however pytest is
# run (the suite uses --import-mode=importlib).
for entry in (str(HERE.parents[1]), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from worker_testkit import (  # noqa: E402
    QueueRun,
    StartWorker,
    WorkerProcess,
    kill_workers,
    launch_worker,
    wait_for_heartbeat,
    wait_until,
)

from stores import Run, ThreadStore, new_message, new_run, new_thread  # noqa: E402

TEST_TIMEOUT_SECONDS = 60  # no single test may take longer than this


@pytest.fixture
def time_limit_seconds() -> float:
    return TEST_TIMEOUT_SECONDS


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., object]:
    """wait_until(predicate, timeout): poll until truthy, fail the test after timeout."""
    return wait_until


# ------------------------------------------------------------------------ store


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """THREADSITE_DATA_DIR for the workers; the store root is <data dir>/threads."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def store(data_dir: Path) -> ThreadStore:
    return ThreadStore(data_dir / "threads")


@pytest.fixture
def queue_run(store: ThreadStore) -> QueueRun:
    """queue_run(user_text, **new_run fields) -> Run: a new thread holding one user
    message and one queued run, made through the store API as the dashboard does."""

    def queue(text: str = "hello there", **run_fields: str) -> Run:
        thread = store.create_thread(new_thread())
        store.append_message(thread.id, new_message(thread.id, "user", text))
        return store.create_run(thread.id, new_run(thread.id, **run_fields))

    return queue


# ----------------------------------------------------------------------- workers


@pytest.fixture
def start_worker(data_dir: Path, store: ThreadStore, tmp_path: Path) -> Iterator[StartWorker]:
    """start_worker(env overrides, args=(), ready=True) -> the worker process.

    With `ready`, returns once the worker has recorded its first heartbeat (it is in
    its loop, claiming runs). Output goes to files under tmp_path/logs, outside the data
    dir. Every worker still running at teardown is SIGKILLed and reaped."""
    started: list[WorkerProcess] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(
        env: dict[str, str] | None = None, *, args: tuple[str, ...] = (), ready: bool = True
    ) -> WorkerProcess:
        process = launch_worker(data_dir, logs, f"worker-{len(started) + 1}", env or {}, args)
        started.append(process)
        if ready:
            wait_for_heartbeat(store, process)
        return process

    try:
        yield start
    finally:
        kill_workers(started)
