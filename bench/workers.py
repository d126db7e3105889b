"""Worker throughput and pickup latency: real `manage.py runworker` processes, the echo
backend at zero delay, runs created through the store as the dashboard creates them.

Times come from the store's journal, where every run status change is appended with a
wall-clock timestamp: pickup latency is a run's in_progress event minus its queued one.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stores import RunStatus, Thread, ThreadStore, new_id, new_message, new_run

from .server import BASE_DIR, BenchError, site_env

WORKERS = 2
BURST_RUNS = 400  # created as fast as the store takes them: throughput
PACED_RUNS = 250  # created at PACED_RATE: pickup latency under a steady load
PACED_RATE = 50.0  # runs/s, the throughput target
SUBMITTERS = 4  # threads creating the burst's runs


@dataclass(frozen=True)
class WorkerResult:
    runs_per_second: float
    pickup_p50_ms: float
    pickup_p90_ms: float
    concurrency: str


def _threads(store: ThreadStore, count: int) -> list[str]:
    """`count` threads with one user message each (a thread has one run at a time)."""
    items = []
    for n in range(count):
        thread = Thread(id=new_id("thread"), created_at=int(time.time()), metadata={"n": str(n)})
        text = f"Please confirm that order {n} ships today to the usual address."
        items.append((thread, [new_message(thread.id, "user", text)]))
    store.import_threads(items)
    return [thread.id for thread, _ in items]


def _events(root: Path) -> dict[str, dict[str, float]]:
    """run ID -> {status: first time the journal saw it}."""
    seen: dict[str, dict[str, float]] = {}
    for line in (root / ".threadsite" / "journal.jsonl").read_bytes().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("e") == "run":
            seen.setdefault(event["id"], {}).setdefault(event["status"], float(event["at"]))
    return seen


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise BenchError(f"timed out waiting for {what}")


def _create_burst(store: ThreadStore, thread_ids: list[str]) -> list[str]:
    run_ids: list[str] = []
    lock = threading.Lock()

    def submit(part: list[str]) -> None:
        for thread_id in part:
            run = store.create_run(thread_id, new_run(thread_id))
            with lock:
                run_ids.append(run.id)

    parts = [thread_ids[i::SUBMITTERS] for i in range(SUBMITTERS)]
    submitters = [threading.Thread(target=submit, args=(part,)) for part in parts]
    for submitter in submitters:
        submitter.start()
    for submitter in submitters:
        submitter.join()
    return run_ids


def _create_paced(store: ThreadStore, thread_ids: list[str]) -> list[str]:
    run_ids = []
    started = time.monotonic()
    for n, thread_id in enumerate(thread_ids):
        delay = started + n / PACED_RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        run_ids.append(store.create_run(thread_id, new_run(thread_id)).id)
    return run_ids


def _all_ended(store: ThreadStore, root: Path, run_ids: list[str]) -> bool:
    events = _events(root)
    return all(
        any(RunStatus(status).is_terminal for status in events.get(run_id, {}))
        for run_id in run_ids
    )


def measure(data_dir: Path, log_dir: Path, *, settings: str = "") -> WorkerResult:
    root = data_dir / "threads"
    store = ThreadStore(root)
    burst_threads = _threads(store, BURST_RUNS)
    paced_threads = _threads(store, PACED_RUNS)
    environ = site_env(data_dir, settings=settings, THREADSITE_ECHO_DELAY="0")
    processes = []
    try:
        for n in range(WORKERS):
            log = (log_dir / f"worker-{n}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "runworker"],
                    cwd=BASE_DIR,
                    env=environ,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait_for(lambda: len(store.heartbeats()) >= WORKERS, 60, "the run workers to start")
        concurrency = ",".join(str(beat.concurrency) for beat in store.heartbeats())

        burst = _create_burst(store, burst_threads)
        _wait_for(lambda: _all_ended(store, root, burst), 120, "the burst of runs to end")
        paced = _create_paced(store, paced_threads)
        _wait_for(lambda: _all_ended(store, root, paced), 120, "the paced runs to end")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    events = _events(root)
    for run_id in burst + paced:
        if RunStatus.COMPLETED.value not in events[run_id]:
            raise BenchError(f"run {run_id} did not complete: {sorted(events[run_id])}")
    first = min(events[run_id][RunStatus.QUEUED.value] for run_id in burst)
    last = max(events[run_id][RunStatus.COMPLETED.value] for run_id in burst)
    pickups = sorted(
        events[run_id][RunStatus.IN_PROGRESS.value] - events[run_id][RunStatus.QUEUED.value]
        for run_id in paced
    )
    return WorkerResult(
        runs_per_second=len(burst) / (last - first),
        pickup_p50_ms=statistics.median(pickups) * 1000,
        pickup_p90_ms=pickups[int(len(pickups) * 0.9)] * 1000,
        concurrency=concurrency,
    )
