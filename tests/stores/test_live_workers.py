"""Which run workers count as alive: the rule the overview, the run page and
store_check all share."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from stores import ThreadStore, WorkerHeartbeat, worker_is_alive


def beat(worker_id: str, *, host: str, pid: int, age: float) -> WorkerHeartbeat:
    now = time.time()
    return WorkerHeartbeat(worker_id, host, pid, "echo", 4, 0, now - 60, now - age)


def test_a_recent_heartbeat_from_another_host_is_alive() -> None:
    assert worker_is_alive(beat("w", host="elsewhere", pid=4242, age=1), time.time())


def test_an_old_heartbeat_is_dead() -> None:
    assert not worker_is_alive(beat("w", host="elsewhere", pid=4242, age=30), time.time())


def test_a_recent_heartbeat_of_a_gone_process_on_this_host_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    here = socket.gethostname()
    assert not worker_is_alive(beat("w", host=here, pid=child.pid, age=1), time.time())
    assert worker_is_alive(beat("w", host=here, pid=os.getpid(), age=1), time.time())


def test_live_workers_lists_only_the_living(tmp_path: Path) -> None:
    store = ThreadStore(tmp_path / "threads")
    store.record_heartbeat(beat("alive", host="elsewhere", pid=1, age=1))
    store.record_heartbeat(beat("stale", host="elsewhere", pid=1, age=60))
    assert [b.worker_id for b in store.live_workers()] == ["alive"]
