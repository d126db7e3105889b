"""Crash under load: while clients post messages and start and cancel runs over HTTP,
through the dashboard and the API, gunicorn workers and run workers are killed with
SIGKILL at random. Afterwards every request that got a success answer is on disk, every
final status a client saw is the final status stored, no run is left stuck once the
run workers are back, and `store_check` is clean (after `--repair` has swept what the
kills left: orphan temp files and the like).

`make test`: 50 kills. `make torture`: 500.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from reliability_testkit import (
    STAFF,
    Client,
    Site,
    api_client,
    manage,
    process_age,
    record_figures,
    running_site,
    scaled,
    wait_for,
)

from stores import RunStatus, ThreadStore

KILLS = scaled(50, 500)
CHAOS_SECONDS = scaled(120, 1200)  # the kills must be done by then
KILL_GAP = (0.1, 0.4)  # seconds between two kills, at random
READY_AGE = 1.0  # a process this old has booted: killing it interrupts real work
WORK_BETWEEN_KILLS = 2  # acknowledged requests between two kills: the site must recover
RECOVERY_SECONDS = 30  # ... within this long after each kill
RUN_WORKERS = 2
API_MESSAGE_CLIENTS = 3
API_RUN_CLIENTS = 3
DASHBOARD_CLIENTS = 2
SETTLE_SECONDS = 60  # for every run to end once the workers are back
TERMINAL = {status.value for status in RunStatus if status.is_terminal}
NOTICE = re.compile(r'<p class="notice" role="status">([^<]*)</p>')
FAILURES = (OSError, http.client.HTTPException)


@dataclass
class Ledger:
    """What the site acknowledged. Only success answers count: a request that failed
    (a reset connection, a 5xx) may or may not have happened."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: set[str] = field(default_factory=set)
    # thread -> (client, sequence number, text, message ID or None) in the order sent
    messages: dict[str, list[tuple[str, int, str, str | None]]] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)  # run -> thread
    told: dict[str, set[str]] = field(default_factory=dict)  # run -> what cancels answered
    seen_final: dict[str, str] = field(default_factory=dict)  # run -> terminal status read
    requests: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        with self.lock:
            self.requests[outcome] += 1

    def message(self, thread: str, client: str, seq: int, text: str, msg_id: str | None) -> None:
        with self.lock:
            self.messages.setdefault(thread, []).append((client, seq, text, msg_id))
            self.requests["acknowledged"] += 1

    def run(self, thread: str, run_id: str) -> None:
        with self.lock:
            self.runs[run_id] = thread
            self.requests["acknowledged"] += 1

    def cancel(self, run_id: str, answer: str) -> None:
        with self.lock:
            self.told.setdefault(run_id, set()).add(answer)
            self.requests["acknowledged"] += 1

    def final(self, run_id: str, status: str) -> None:
        with self.lock:
            self.seen_final[run_id] = status
            self.requests["acknowledged"] += 1


def ok(reply_status: int) -> bool:
    return reply_status < 400


class Load:
    """The clients, each in a thread of its own, until `stop` is set."""

    def __init__(self, site: Site, ledger: Ledger, assistant_id: str, seed: int) -> None:
        self.site = site
        self.ledger = ledger
        self.assistant_id = assistant_id
        self.stop = threading.Event()
        self.rng = random.Random(seed)
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        loops: list[tuple[str, Callable[[str, random.Random], None]]] = []
        loops += [(f"api-msg-{n}", self.api_messages) for n in range(API_MESSAGE_CLIENTS)]
        loops += [(f"api-run-{n}", self.api_runs) for n in range(API_RUN_CLIENTS)]
        loops += [(f"dash-{n}", self.dashboard) for n in range(DASHBOARD_CLIENTS)]
        for name, loop in loops:
            rng = random.Random(self.rng.random())
            thread = threading.Thread(target=self.guard, args=(loop, name, rng), name=name)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), f"client {thread.name} did not stop"

    def guard(self, loop: Callable[[str, random.Random], None], name: str, rng: random.Random):
        try:
            loop(name, rng)
        except Exception:  # a bug in the test itself: fail loudly, not silently
            self.ledger.errors.append(f"{name}: {traceback.format_exc()}")

    def pause(self, rng: random.Random, low: float = 0.0, high: float = 0.05) -> None:
        self.stop.wait(rng.uniform(low, high))

    def until(self, action: Callable[[], bool]) -> None:
        """Repeat `action` until it succeeds (or the load stops)."""
        while not self.stop.is_set():
            try:
                if action():
                    return
            except FAILURES:
                self.ledger.count("failed")
            self.stop.wait(0.1)

    # ------------------------------------------------------------------- API

    def api_thread(self, client: Client, name: str) -> str:
        found: list[str] = []

        def create() -> bool:
            reply = client.api("POST", "/threads", {"metadata": {"client": name}})
            if reply.status == 200:
                found.append(reply.json()["id"])
                self.ledger.threads.add(found[0])
                self.ledger.count("acknowledged")
                return True
            return False

        self.until(create)
        return found[0] if found else ""

    def api_messages(self, name: str, rng: random.Random) -> None:
        client = api_client(self.site.base_url, timeout=5)
        thread = self.api_thread(client, name)
        seq = 0
        while not self.stop.is_set():
            text = f"{name} says {seq}"
            try:
                reply = client.api(
                    "POST", f"/threads/{thread}/messages", {"role": "user", "content": text}
                )
            except FAILURES:
                self.ledger.count("failed")
            else:
                if reply.status == 200:
                    self.ledger.message(thread, name, seq, text, reply.json()["id"])
                else:
                    self.ledger.count(f"status {reply.status}")
            seq += 1
            self.pause(rng)

    def api_runs(self, name: str, rng: random.Random) -> None:
        client = api_client(self.site.base_url, timeout=5)
        thread = self.api_thread(client, name)
        seq = 0
        while not self.stop.is_set():
            try:
                text = f"{name} asks {seq}"
                seq += 1
                reply = client.api(
                    "POST", f"/threads/{thread}/messages", {"role": "user", "content": text}
                )
                if reply.status == 200:
                    self.ledger.message(thread, name, seq, text, reply.json()["id"])
                reply = client.api(
                    "POST", f"/threads/{thread}/runs", {"assistant_id": self.assistant_id}
                )
                if reply.status != 200:
                    self.ledger.count(f"status {reply.status}")
                    self.pause(rng, 0.1, 0.3)  # busy: the last run has not ended yet
                    continue
                run_id = reply.json()["id"]
                self.ledger.run(thread, run_id)
                choice = rng.random()
                if choice < 0.6:
                    self.pause(rng, 0.0, 0.15 if choice < 0.3 else 0.0)
                    cancel = client.api("POST", f"/threads/{thread}/runs/{run_id}/cancel")
                    if cancel.status == 200:
                        self.ledger.cancel(run_id, cancel.json()["status"])
                    elif cancel.status == 400 and "already ended" in cancel.text:
                        self.ledger.count("cancel refused: ended")
                self.watch(client, thread, run_id)
            except FAILURES:
                self.ledger.count("failed")
                self.pause(rng, 0.05, 0.2)

    def watch(self, client: Client, thread: str, run_id: str) -> None:
        deadline = time.monotonic() + 8
        while not self.stop.is_set() and time.monotonic() < deadline:
            reply = client.api("GET", f"/threads/{thread}/runs/{run_id}")
            if reply.status == 200 and reply.json()["status"] in TERMINAL:
                self.ledger.final(run_id, reply.json()["status"])
                return
            self.stop.wait(0.1)

    # ------------------------------------------------------------- dashboard

    def dashboard(self, name: str, rng: random.Random) -> None:
        holder: list[Client] = []

        def sign_in() -> bool:
            client = Client(self.site.base_url)
            if client.sign_in(STAFF).status != 302:
                return False
            holder.append(client)
            return True

        self.until(sign_in)
        if not holder:
            return
        client = holder[-1]
        client.timeout = 5
        thread_id: list[str] = []
        seq = 0

        def create() -> bool:
            nonlocal seq
            text = f"{name} opens {seq}"
            seq += 1
            reply = client.form(
                "/threads/new", {"rows": "4", "key_0": "client", "value_0": name, "message": text}
            )
            match = re.fullmatch(r"/threads/([^/]+)/", reply.location)
            if reply.status == 302 and match:
                thread_id.append(match.group(1))
                self.ledger.threads.add(match.group(1))
                self.ledger.message(match.group(1), name, seq, text, None)
                return True
            return False

        self.until(create)
        if not thread_id:
            return
        thread = thread_id[0]
        while not self.stop.is_set():
            try:
                seq += 1
                text = f"{name} writes {seq}"
                reply = client.form(f"/threads/{thread}/messages", {"text": text})
                if reply.status == 302:
                    self.ledger.message(thread, name, seq, text, None)
                else:
                    self.ledger.count(f"status {reply.status}")
                if rng.random() < 0.35:
                    self.dashboard_run(client, thread, rng)
            except FAILURES:
                self.ledger.count("failed")
            self.pause(rng)

    def dashboard_run(self, client: Client, thread: str, rng: random.Random) -> None:
        reply = client.form(f"/threads/{thread}/runs", {"model": "echo", "instructions": ""})
        match = re.fullmatch(rf"/threads/{thread}/runs/([^/]+)/", reply.location)
        if reply.status != 302 or not match:
            self.ledger.count(f"start run: status {reply.status}")
            return
        run_id = match.group(1)
        self.ledger.run(thread, run_id)
        if rng.random() < 0.5:
            self.pause(rng, 0.0, 0.1)
            cancel = client.form(f"/threads/{thread}/runs/{run_id}/cancel", {}, htmx=True)
            notice = NOTICE.search(cancel.text)
            if cancel.status in (200, 286) and notice:
                said = notice.group(1)
                ended = re.match(r"This run had already ended: (\w+)\.", said)
                if ended:
                    self.ledger.final(run_id, ended.group(1))
                elif said.startswith("Cancelled"):
                    self.ledger.cancel(run_id, "cancelled")
                elif said.startswith("Cancelling"):
                    self.ledger.cancel(run_id, "cancelling")


class Chaos:
    """SIGKILLs gunicorn workers and run workers at random; gunicorn's master starts
    new web workers, and this starts new run workers."""

    def __init__(self, site: Site, ledger: Ledger, seed: int) -> None:
        self.site = site
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.kills: Counter[str] = Counter()

    def run(self, kills: int, seconds: float) -> None:
        """Kill at random moments, but only once the site has served some requests since
        the last kill: the kills land among real work however slow the machine, and a
        site that stops recovering fails the test."""
        deadline = time.monotonic() + seconds
        while sum(self.kills.values()) < kills:
            assert time.monotonic() < deadline, f"only {dict(self.kills)} kills in {seconds} s"
            enough = self.ledger.requests["acknowledged"] + WORK_BETWEEN_KILLS
            wait_for(
                lambda enough=enough: self.ledger.requests["acknowledged"] >= enough,
                RECOVERY_SECONDS,
                f"the site to serve again after {dict(self.kills)} kills",
            )
            time.sleep(self.rng.uniform(*KILL_GAP))
            self.keep_workers_running()
            if self.rng.random() < 0.5:
                self.kill_web_worker()
            else:
                self.kill_run_worker()

    def kill_web_worker(self) -> None:
        booted = [pid for pid in self.site.web_worker_pids() if process_age(pid) >= READY_AGE]
        if booted:
            pid = self.rng.choice(booted)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            self.kills["gunicorn worker"] += 1

    def kill_run_worker(self) -> None:
        live = [p for p in self.site.live_workers() if process_age(p.pid) >= READY_AGE]
        if live:
            process = self.rng.choice(live)
            process.kill()
            process.wait(timeout=10)
            self.kills["run worker"] += 1

    def keep_workers_running(self) -> None:
        while len(self.site.live_workers()) < RUN_WORKERS:
            self.site.start_worker(ready=False)


def check_against_disk(store: ThreadStore, ledger: Ledger) -> int:
    """Every acknowledgement against the store; returns how many were checked."""
    checked = 0
    for thread in ledger.threads:
        store.get_thread(thread)
        checked += 1
    for thread, sent in ledger.messages.items():
        stored = store.list_messages(thread)
        position_of_id = {m.id: i for i, m in enumerate(stored)}
        position_of_text = {m.text: i for i, m in enumerate(stored) if m.role == "user"}
        ids = [m.id for m in stored]
        assert len(ids) == len(set(ids)), f"a message stored twice in {thread}"
        by_client: dict[str, list[int]] = {}
        for client, _seq, text, msg_id in sent:
            position = position_of_id.get(msg_id) if msg_id else position_of_text.get(text)
            assert position is not None, f"acknowledged message {text!r} lost from {thread}"
            assert stored[position].text == text
            by_client.setdefault(client, []).append(position)
            checked += 1
        for client, positions in by_client.items():
            assert positions == sorted(positions), f"{client}'s messages out of order"
    for run_id, thread in ledger.runs.items():
        run = store.get_run(thread, run_id)
        assert run.status.is_terminal, f"run {run_id} left {run.status.value}"
        checked += 1
        replies = [
            m for m in store.list_messages(thread) if m.run_id == run_id and m.role == "assistant"
        ]
        if run.status is RunStatus.CANCELLED:
            assert all(m.status != "completed" for m in replies), f"cancelled {run_id} replied"
        if run.status is RunStatus.COMPLETED:
            assert [m.status for m in replies] == ["completed"], f"{run_id}: {replies}"
    for run_id, answers in ledger.told.items():
        final = store.get_run(ledger.runs[run_id], run_id).status.value
        # Told "cancelled" or "cancelling": the cancel won, so the run ends cancelled.
        assert final == "cancelled", f"run {run_id}: told {answers}, stored {final}"
        checked += 1
    for run_id, seen in ledger.seen_final.items():
        final = store.get_run(ledger.runs[run_id], run_id).status.value
        assert final == seen, f"run {run_id}: a client saw {seen}, stored {final}"
        checked += 1
    return checked


def store_check(site: Site, *args: str) -> tuple[int, str]:
    result = manage(site.data_dir, "store_check", *args)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("seed", [20250611])
def test_nothing_acknowledged_is_lost_when_processes_are_killed(tmp_path: Path, seed: int):
    with running_site(tmp_path, web_workers=2, threads=4) as site:
        for _ in range(RUN_WORKERS):
            site.start_worker()
        setup = api_client(site.base_url)
        assistant = setup.api("POST", "/assistants", {"model": "echo", "name": "crash test"})
        assert assistant.status == 200, assistant.text
        ledger = Ledger()
        load = Load(site, ledger, assistant.json()["id"], seed)
        chaos = Chaos(site, ledger, seed)
        started = time.monotonic()
        load.start()
        try:
            chaos.run(KILLS, CHAOS_SECONDS)
            time.sleep(1.0)  # a last moment of load with everything back
        finally:
            load.finish()
        chaos_seconds = time.monotonic() - started
        assert not ledger.errors, "\n".join(ledger.errors)

        # The run workers are back: every run ends (reaped, cancelled or completed).
        chaos.keep_workers_running()
        store = site.store

        def every_run_ended() -> bool:
            return (
                all(
                    store.get_run(thread, run_id).status.is_terminal
                    for run_id, thread in ledger.runs.items()
                )
                and not store.queued_runs()
            )

        wait_for(every_run_ended, SETTLE_SECONDS, "every run to end once workers are back")
        site.close()

        checked = check_against_disk(ThreadStore(site.store_root), ledger)
        before_code, before = store_check(site)
        allowed = {"orphan_temp_file", "unparsable_line", "stale_journal"}
        kinds = set(re.findall(r"^  (\w+) \(", before, re.MULTILINE))
        assert kinds <= allowed, before
        code, repaired = store_check(site, "--repair", "--grace", "0")
        assert code == 0, repaired
        code, after = store_check(site)
        assert code == 0, after
        assert "healthy" in after
        check_against_disk(ThreadStore(site.store_root), ledger)  # repair lost nothing

    total = sum(chaos.kills.values())
    assert total >= KILLS
    assert ledger.requests["acknowledged"] >= WORK_BETWEEN_KILLS * KILLS, ledger.requests
    record_figures(
        "crash_under_load",
        kills=total,
        kills_by_kind=dict(chaos.kills),
        seconds=round(chaos_seconds, 1),
        acknowledged_requests=ledger.requests["acknowledged"],
        acknowledgements_checked=checked,
        failed_requests=ledger.requests["failed"],
        runs=len(ledger.runs),
        cancels_checked=len(ledger.told),
        final_statuses_checked=len(ledger.seen_final),
        messages=sum(len(sent) for sent in ledger.messages.values()),
        store_check_before_repair=sorted(kinds),
        lost=0,
    )
