"""Helpers shared by the `stores` tests, and the worker functions that run in child
processes (they must live in an importable module, not in a test file)."""

from __future__ import annotations

import json
import multiprocessing
import random
import time
import traceback
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from stores import (
    AlreadyExists,
    Run,
    RunError,
    RunInTerminalState,
    RunNotFound,
    RunRef,
    RunStatus,
    RunStep,
    RunStepNotFound,
    RunStepStatus,
    Thread,
    ThreadBusy,
    ThreadNotFound,
    ThreadStore,
    new_message,
    new_run,
    new_step,
    new_thread,
)

SPAWN = multiprocessing.get_context("spawn")
BARRIER_TIMEOUT = 60.0

TERMINAL_RUN_STATUSES = ("completed", "failed", "cancelled", "expired", "incomplete")
NOT_FOUND = (ThreadNotFound, RunNotFound, RunStepNotFound)


def sv(value: object) -> str:
    """A status as its plain string value, whether the store hands back an Enum or a str."""
    return value.value if isinstance(value, Enum) else str(value)


def rs(name: str) -> RunStatus:
    return RunStatus(name)


def ss(name: str) -> RunStepStatus:
    return RunStepStatus(name)


def assert_not_found(error: BaseException, expected: type[Exception]) -> None:
    """`error` is `expected` and none of the other not-found errors (a missing parent is
    reported as itself, not as the child it was asked about)."""
    assert isinstance(error, expected), f"expected {expected.__name__}, got {error!r}"
    for other in NOT_FOUND:
        if not issubclass(expected, other):
            assert not isinstance(error, other), f"{error!r} is also a {other.__name__}"


def make_thread(store: ThreadStore, metadata: dict[str, str] | None = None) -> Thread:
    return store.create_thread(new_thread(metadata))


def make_run(store: ThreadStore, thread_id: str, status: str = "queued") -> Run:
    run = store.create_run(thread_id, new_run(thread_id))
    if status != "queued":
        run = store.update_run_status(thread_id, run.id, rs(status))
    return run


def make_held_run(store: ThreadStore, thread_id: str, status: str = "in_progress") -> Run:
    """A running run that a live worker holds (claimed under a long lease), so that a
    cancel has to wait for that worker: it becomes `cancelling`, not `cancelled`."""
    run = store.create_run(thread_id, new_run(thread_id))
    claimed = store.claim_run(
        RunRef(run_id=run.id, thread_id=thread_id),
        worker_id="test-worker",
        lease_seconds=3600,
        run_timeout=3600,
    )
    assert claimed is not None
    assert sv(claimed.status) == "in_progress"
    if status != "in_progress":
        claimed = store.update_run_status(thread_id, run.id, rs(status))
    return claimed


def make_step(store: ThreadStore, thread_id: str, run_id: str) -> RunStep:
    return store.append_step(thread_id, run_id, new_step(thread_id, run_id))


def message_ids(store: ThreadStore, thread_id: str) -> list[str]:
    return [m.id for m in store.list_messages(thread_id)]


def tree_snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry below `directory`: file bytes, None for directories, link targets for
    symlinks (as bytes), keyed by relative path. Used to prove a tree was left alone."""
    snapshot: dict[str, bytes | None] = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        if path.is_symlink():
            snapshot[key] = b"->" + str(path.readlink()).encode()
        elif path.is_dir():
            snapshot[key] = None
        else:
            snapshot[key] = path.read_bytes()
    return snapshot


# --------------------------------------------------------------- process plumbing


def _entry(func: Callable[..., Any], out: str, args: tuple[Any, ...]) -> None:
    try:
        payload = {"ok": True, "result": func(*args)}
    except BaseException:
        payload = {"ok": False, "error": traceback.format_exc()}
    Path(out).write_text(json.dumps(payload))


def run_in_processes(
    func: Callable[..., Any],
    args_list: Sequence[tuple[Any, ...]],
    *,
    out_dir: Path,
    timeout: float,
) -> list[Any]:
    """Run func(*args) in one spawned process per args tuple; return their results in
    order. Fails if any process raises, dies, or is still running after `timeout` s."""
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for index, args in enumerate(args_list):
        out = out_dir / f"result-{index}.json"
        proc = SPAWN.Process(target=_entry, args=(func, str(out), args), daemon=True)
        proc.start()
        procs.append((proc, out))
    deadline = time.monotonic() + timeout
    hung = []
    for proc, _ in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            hung.append(proc)
    for proc in hung:
        proc.kill()
        proc.join(10)
    assert not hung, f"{len(hung)} worker process(es) still running after {timeout} s"
    results = []
    for index, (proc, out) in enumerate(procs):
        assert out.exists(), f"worker {index} died (exit code {proc.exitcode}) without a result"
        payload = json.loads(out.read_text())
        assert payload["ok"], f"worker {index} raised:\n{payload['error']}"
        results.append(payload["result"])
    return results


# ------------------------------------------------------------ worker functions


def append_worker(root: str, thread_id: str, proc: int, count: int, barrier: Any) -> list[str]:
    store = ThreadStore(root)
    messages = [new_message(thread_id, "user", f"p{proc}-{k}") for k in range(count)]
    barrier.wait(BARRIER_TIMEOUT)
    for msg in messages:
        store.append_message(thread_id, msg)
    return [msg.id for msg in messages]


def terminal_race_worker(
    root: str, pairs: list[list[str]], status: str, proc: int, barrier: Any, reverse: bool
) -> list[dict[str, Any]]:
    """Try to move every run to `status`; report, per run, whether this process won."""
    store = ThreadStore(root)
    order = list(reversed(pairs)) if reverse else pairs
    error = RunError(code="server_error", message=f"set by process {proc}")
    barrier.wait(BARRIER_TIMEOUT)
    outcomes = []
    for thread_id, run_id in order:
        try:
            run = store.update_run_status(thread_id, run_id, rs(status), error)
        except RunInTerminalState:
            outcomes.append({"run": run_id, "won": False})
        else:
            outcomes.append({"run": run_id, "won": True, "record": run.to_dict()})
    return outcomes


def _jitter(rng: random.Random) -> None:
    """Spin for up to 2 ms so that neither side of a race always gets there first."""
    until = time.perf_counter() + rng.uniform(0, 0.002)
    while time.perf_counter() < until:
        pass


def complete_worker(root: str, pairs: list[list[str]], barrier: Any, seed: int) -> list[list[Any]]:
    """complete_run on every run, meeting the canceller at `barrier` before each one."""
    store = ThreadStore(root)
    rng = random.Random(seed)
    replies = [new_message(t, "assistant", f"reply to {r}", run_id=r) for t, r in pairs]
    outcomes: list[list[Any]] = []
    for (thread_id, run_id), reply in zip(pairs, replies, strict=True):
        barrier.wait(BARRIER_TIMEOUT)
        _jitter(rng)
        try:
            run = store.complete_run(thread_id, run_id, reply)
        except RunInTerminalState as exc:
            outcomes.append([run_id, "terminal", sv(exc.run.status), reply.id])
        else:
            outcomes.append([run_id, "returned", sv(run.status), reply.id])
    return outcomes


def cancel_worker(root: str, pairs: list[list[str]], barrier: Any, seed: int) -> list[list[Any]]:
    """cancel_run on every run, meeting the completer at `barrier` before each one."""
    store = ThreadStore(root)
    rng = random.Random(seed)
    outcomes: list[list[Any]] = []
    for thread_id, run_id in pairs:
        barrier.wait(BARRIER_TIMEOUT)
        _jitter(rng)
        try:
            run = store.cancel_run(thread_id, run_id)
        except RunInTerminalState as exc:
            outcomes.append([run_id, "terminal", sv(exc.run.status)])
        else:
            outcomes.append([run_id, "returned", sv(run.status)])
    return outcomes


def race_side_worker(
    side: str, root: str, pairs: list[list[str]], barrier: Any, seed: int
) -> list[list[Any]]:
    worker = complete_worker if side == "complete" else cancel_worker
    return worker(root, pairs, barrier, seed)


def create_same_thread_worker(root: str, thread_id: str, proc: int, barrier: Any) -> str:
    store = ThreadStore(root)
    thread = Thread(id=thread_id, created_at=int(time.time()), metadata={"proc": str(proc)})
    barrier.wait(BARRIER_TIMEOUT)
    try:
        store.create_thread(thread)
    except AlreadyExists:
        return "exists"
    return "created"


def create_run_race_worker(root: str, thread_ids: list[str], barrier: Any) -> list[list[str]]:
    """For each thread in turn (all processes in step), try to start a run on it."""
    store = ThreadStore(root)
    outcomes = []
    for thread_id in thread_ids:
        run = new_run(thread_id)
        barrier.wait(BARRIER_TIMEOUT)
        try:
            store.create_run(thread_id, run)
        except ThreadBusy:
            outcomes.append([thread_id, "busy", run.id])
        else:
            outcomes.append([thread_id, "created", run.id])
    return outcomes


def setup_active_runs_worker(root: str, count: int, held: bool) -> list[list[str]]:
    """Make `count` threads, each with one in_progress run holding an open
    message_creation step; `held` runs are claimed by a live worker. Returns
    [thread_id, run_id, step_id] for each."""
    store = ThreadStore(root)
    made = []
    for _ in range(count):
        thread = store.create_thread(new_thread())
        make = make_held_run if held else make_run
        run = make(store, thread.id, "in_progress")
        step = store.append_step(thread.id, run.id, new_step(thread.id, run.id))
        made.append([thread.id, run.id, step.id])
    return made
