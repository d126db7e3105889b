"""A misconfigured worker refuses to start, saying what to fix; it fails no runs.

Every misconfigured worker of the module is launched at once (each costs a Python and
Django start-up) and each test then checks one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from worker_testkit import (
    API_KEY,
    QueueRun,
    StartWorker,
    WorkerProcess,
    kill_workers,
    launch_worker,
    wait_for_status,
    wait_until,
)

from stores import Run, RunStatus, ThreadStore, new_message, new_run, new_thread

OPENAI = {"THREADSITE_BACKEND": "openai", "THREADSITE_MODEL_API_KEY": API_KEY}

# case -> (environment, command-line arguments, what stderr must name)
CASES: dict[str, tuple[dict[str, str], tuple[str, ...], list[str]]] = {
    "unknown backend": ({"THREADSITE_BACKEND": "bogus"}, (), ["THREADSITE_BACKEND", "bogus"]),
    "openai without base URL": (
        {**OPENAI, "THREADSITE_MODEL": "gpt-test"},
        (),
        ["THREADSITE_MODEL_BASE_URL"],
    ),
    "openai without model": (
        {**OPENAI, "THREADSITE_MODEL_BASE_URL": "http://127.0.0.1:9/v1"},
        (),
        ["THREADSITE_MODEL"],
    ),
    "openai base URL without scheme": (
        {**OPENAI, "THREADSITE_MODEL_BASE_URL": "127.0.0.1:9/v1", "THREADSITE_MODEL": "m"},
        (),
        ["THREADSITE_MODEL_BASE_URL", "http://"],
    ),
    "lease not a number": (
        {"THREADSITE_RUN_LEASE_SECONDS": "soon"},
        (),
        ["THREADSITE_RUN_LEASE_SECONDS", "soon"],
    ),
    "lease NaN": ({"THREADSITE_RUN_LEASE_SECONDS": "nan"}, (), ["THREADSITE_RUN_LEASE_SECONDS"]),
    "timeout NaN": (
        {"THREADSITE_RUN_TIMEOUT_SECONDS": "nan"},
        (),
        ["THREADSITE_RUN_TIMEOUT_SECONDS"],
    ),
    "concurrency zero": (
        {"THREADSITE_WORKER_CONCURRENCY": "0"},
        (),
        ["THREADSITE_WORKER_CONCURRENCY"],
    ),
    "model timeout not a number": (
        {**OPENAI, "THREADSITE_MODEL_BASE_URL": "http://127.0.0.1:9/v1", "THREADSITE_MODEL": "m"}
        | {"THREADSITE_MODEL_TIMEOUT_SECONDS": "1m"},
        (),
        ["THREADSITE_MODEL_TIMEOUT_SECONDS"],
    ),
    "--concurrency 0": ({}, ("--concurrency", "0"), ["--concurrency"]),
}

START_SECONDS = 30  # all the workers together must have exited or started by then


@dataclass
class Outcome:
    """What became of one misconfigured worker."""

    exited: bool  # by itself; False: it accepted the settings (and was killed)
    returncode: int | None
    stderr: str
    stdout: str
    run: Run  # a run queued in its store before it started
    heartbeats: int


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    launched: dict[str, tuple[WorkerProcess, ThreadStore, Run]] = {}
    try:
        for index, (case, (env, args, _)) in enumerate(CASES.items()):
            base = tmp_path_factory.mktemp(f"config-{index}")
            data_dir = base / "data"
            data_dir.mkdir()
            store = ThreadStore(data_dir / "threads")
            thread = store.create_thread(new_thread())
            store.append_message(thread.id, new_message(thread.id, "user", "hi"))
            run = store.create_run(thread.id, new_run(thread.id))
            launched[case] = (launch_worker(data_dir, base, "worker", env, args), store, run)

        # Each worker either exits or, having accepted its settings, records a heartbeat.
        def all_settled() -> bool:
            return all(w.poll() is not None or s.heartbeats() for w, s, _ in launched.values())

        wait_until(all_settled, START_SECONDS, interval=0.05, message="every worker to settle")
        exited = {case for case, (worker, _, _) in launched.items() if worker.poll() is not None}
        kill_workers([worker for worker, _, _ in launched.values()])

        yield {
            case: Outcome(
                exited=case in exited,
                returncode=worker.returncode,
                stderr=worker.stderr_text(),
                stdout=worker.stdout_path.read_text(errors="replace"),
                run=store.get_run(run.thread_id, run.id),
                heartbeats=len(store.heartbeats()),
            )
            for case, (worker, store, run) in launched.items()
        }
    finally:
        kill_workers([worker for worker, _, _ in launched.values()])


@pytest.mark.parametrize("case", list(CASES))
def test_a_misconfigured_worker_refuses_to_start(case: str, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[case]
    _, _, names = CASES[case]
    assert outcome.exited, (
        f"the worker started working despite the bad setting ({case}):\n{outcome.stderr}"
    )
    assert outcome.returncode != 0
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert "cannot start" in outcome.stderr
    for name in names:
        assert name in outcome.stderr, f"{name!r} not in {outcome.stderr!r}"
    assert API_KEY not in outcome.stderr + outcome.stdout
    # Not a failing run: the queued run was left alone, and no worker ever announced itself.
    assert outcome.run.status is RunStatus.QUEUED
    assert outcome.heartbeats == 0


def test_valid_settings_start_a_worker(
    store: ThreadStore, queue_run: QueueRun, start_worker: StartWorker
) -> None:
    """The control: the same launch with valid settings starts and executes runs."""
    worker = start_worker(
        {
            "THREADSITE_BACKEND": "echo",
            "THREADSITE_RUN_LEASE_SECONDS": "5",
            "THREADSITE_RUN_TIMEOUT_SECONDS": "60",
            "THREADSITE_WORKER_CONCURRENCY": "2",
            "THREADSITE_ECHO_DELAY": "0",
        }
    )
    run = queue_run("ping")
    assert wait_for_status(store, run, {"completed", "failed"}, 15).status is RunStatus.COMPLETED
    assert worker.poll() is None


def test_empty_settings_mean_the_defaults(store: ThreadStore, start_worker: StartWorker) -> None:
    """As everywhere in Threadsite (.env.example: "an unset or empty value uses the
    default"), a setting left empty, like `THREADSITE_BACKEND=` in a .env file, is the
    default, not an error."""
    empty = dict.fromkeys(
        (
            "THREADSITE_BACKEND",
            "THREADSITE_RUN_LEASE_SECONDS",
            "THREADSITE_RUN_TIMEOUT_SECONDS",
            "THREADSITE_WORKER_CONCURRENCY",
            "THREADSITE_WORKER_SHUTDOWN_SECONDS",
            "THREADSITE_ECHO_DELAY",
            "THREADSITE_MODEL_BASE_URL",
            "THREADSITE_MODEL_API_KEY",
            "THREADSITE_MODEL",
            "THREADSITE_MODEL_TIMEOUT_SECONDS",
        ),
        "",
    )
    worker = start_worker(empty, ready=False)
    wait_until(
        lambda: worker.poll() is not None or store.heartbeats(),
        START_SECONDS,
        message="the worker to start or exit",
    )
    assert worker.poll() is None, f"empty settings stopped the worker:\n{worker.stderr_text()}"
    (beat,) = store.heartbeats()
    assert beat.backend == "echo"
    assert beat.concurrency == 4
