"""Helpers shared by the run worker tests: bounded waits, worker processes, store reads."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from stores import Run, RunStep, ThreadMessage, ThreadStore

T = TypeVar("T")

# The fixtures' types (see conftest.py).
QueueRun = Callable[..., Run]  # queue_run(user_text, **new_run fields) -> the queued run

REPO_ROOT = Path(__file__).resolve().parents[2]

WORKER_START_SECONDS = 20  # a worker must have written its first heartbeat by then
WORKER_STOP_SECONDS = 20  # and must exit this soon after SIGTERM (plus its grace period)

# What the tests configure as THREADSITE_MODEL_API_KEY; it must never be written down.
API_KEY = "sk-test-SECRET123"


# ----------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], T], timeout: float, *, interval: float = 0.02, message: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy and return that; fail the test
    after `timeout` seconds, saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "a condition")
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------- store reads


def run_now(store: ThreadStore, run: Run) -> Run:
    return store.get_run(run.thread_id, run.id)


def steps_of(store: ThreadStore, run: Run) -> list[RunStep]:
    return store.list_steps(run.thread_id, run.id)


def assistant_messages(store: ThreadStore, run: Run) -> list[ThreadMessage]:
    """The assistant messages the run left on its thread."""
    return [
        m
        for m in store.list_messages(run.thread_id)
        if m.role == "assistant" and m.run_id == run.id
    ]


def wait_for_status(store: ThreadStore, run: Run, statuses: set[str], timeout: float) -> Run:
    """The run once its status is one of `statuses`; fails saying where it got stuck."""
    deadline = time.monotonic() + timeout
    while True:
        current = run_now(store, run)
        if current.status.value in statuses:
            return current
        if time.monotonic() >= deadline:
            pytest.fail(
                f"run {run.id} is still {current.status.value} after {timeout:g} s, "
                f"not {sorted(statuses)} (last_error: {current.last_error})"
            )
        time.sleep(0.02)


def wait_for_queue(
    store: ThreadStore, *, queued: int, running: int = 0, timeout: float = 5
) -> None:
    """Wait until the work queue holds `queued` waiting and `running` claimed runs. (The
    store drops a run's queue markers just after it publishes the run's new status, so
    right after a status change they may lag a moment.)"""
    wait_until(
        lambda: store.queued_count() == queued and len(store.running_runs()) == running,
        timeout,
        message=f"{queued} queued and {running} running runs in the work queue",
    )


def wait_for_draft(store: ThreadStore, run: Run, timeout: float = 15) -> str:
    """The run's published partial text, once there is some."""
    return wait_until(
        lambda: store.read_draft(run.thread_id, run.id),
        timeout,
        message=f"a draft of run {run.id}",
    )


# ----------------------------------------------------------------------- workers


class WorkerProcess(subprocess.Popen[bytes]):
    """A `manage.py runworker` process whose stdout and stderr go to files."""

    stdout_path: Path
    stderr_path: Path

    def output(self) -> str:
        """Everything the worker wrote so far, stdout then stderr."""
        return "\n".join(
            path.read_text(errors="replace") for path in (self.stdout_path, self.stderr_path)
        )

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def worker_env(data_dir: Path, overrides: dict[str, str]) -> dict[str, str]:
    """A worker's environment: ours without any Threadsite or Django setting (a
    developer's shell must not leak into the test), plus the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "THREADSITE_"))}
    env.update(
        THREADSITE_DATA_DIR=str(data_dir),
        DJANGO_SECRET_KEY="worker-tests-need-no-secret",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(overrides)
    return env


def launch_worker(
    data_dir: Path, log_dir: Path, name: str, env: dict[str, str], args: tuple[str, ...] = ()
) -> WorkerProcess:
    """Start `manage.py runworker` over data_dir; its output goes to log_dir/name.*"""
    stdout_path = log_dir / f"{name}.stdout"
    stderr_path = log_dir / f"{name}.stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = WorkerProcess(
            [sys.executable, "manage.py", "runworker", *args],
            cwd=REPO_ROOT,
            env=worker_env(data_dir, env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    process.stdout_path = stdout_path
    process.stderr_path = stderr_path
    return process


def kill_workers(workers: list[WorkerProcess]) -> None:
    """SIGKILL every worker still running, and reap them all."""
    for process in workers:
        if process.poll() is None:
            process.kill()
    for process in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


StartWorker = Callable[..., "WorkerProcess"]  # start_worker(env, *, args, ready) -> process


def wait_for_heartbeat(store: ThreadStore, process: WorkerProcess) -> None:
    """Wait until the worker is in its loop (it has recorded a heartbeat)."""

    def beating() -> bool:
        if process.poll() is not None:
            pytest.fail(f"worker exited with {process.returncode}:\n{process.output()}")
        return any(beat.pid == process.pid for beat in store.heartbeats())

    wait_until(beating, WORKER_START_SECONDS, interval=0.05, message="the worker's heartbeat")


def stop_worker(
    process: WorkerProcess, sig: int = signal.SIGTERM, *, timeout: float = WORKER_STOP_SECONDS
) -> int:
    """Signal the worker and wait (bounded) for it to exit; its exit status."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        pytest.fail(
            f"worker did not exit within {timeout:g} s of signal {sig}:\n{process.output()}"
        )


def assert_secret_absent(secret: str, data_dir: Path, workers: list[WorkerProcess]) -> None:
    """The secret is in no file under the data dir and in no worker's output."""
    needle = secret.encode()
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            assert needle not in path.read_bytes(), f"the API key was written to {path}"
    for worker in workers:
        for path in (worker.stdout_path, worker.stderr_path):
            assert needle not in path.read_bytes(), f"the API key appears in {path.name}"
