"""Many real OS processes on one store: no lost updates, one winner per race, and disk
agrees with what every caller was told."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from stores_testkit import (
    SPAWN,
    TERMINAL_RUN_STATUSES,
    append_worker,
    create_run_race_worker,
    create_same_thread_worker,
    make_run,
    make_thread,
    race_side_worker,
    run_in_processes,
    setup_active_runs_worker,
    sv,
    terminal_race_worker,
)

from stores import Run, ThreadStore, new_thread


def test_parallel_appends_lose_nothing(tmp_path: Path) -> None:
    procs, per_proc = 8, 200
    root = tmp_path / "store"
    store = ThreadStore(root)
    thread = make_thread(store)
    barrier = SPAWN.Barrier(procs)
    results = run_in_processes(
        append_worker,
        [(str(root), thread.id, p, per_proc, barrier) for p in range(procs)],
        out_dir=tmp_path / "out",
        timeout=90,
    )

    raw = (root / thread.id / "messages.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == procs * per_proc
    records = [json.loads(line) for line in lines]  # every line parses on its own

    messages = store.list_messages(thread.id)
    assert len(messages) == procs * per_proc
    ids = [m.id for m in messages]
    assert len(set(ids)) == len(ids)
    assert ids == [r["id"] for r in records]
    assert set(ids) == {i for result in results for i in result}
    for p in range(procs):
        own = [m.text for m in messages if m.text.startswith(f"p{p}-")]
        assert own == [f"p{p}-{k}" for k in range(per_proc)]
        own_ids = [m.id for m in messages if m.text.startswith(f"p{p}-")]
        assert own_ids == results[p]
    assert store.check().ok


def test_racing_terminal_updates_have_exactly_one_winner(tmp_path: Path) -> None:
    procs, runs = 8, 50
    root = tmp_path / "store"
    store = ThreadStore(root)
    pairs = []
    for _ in range(runs):
        thread = make_thread(store)
        run = make_run(store, thread.id, "in_progress")
        pairs.append([thread.id, run.id])
    barrier = SPAWN.Barrier(procs)
    statuses = [TERMINAL_RUN_STATUSES[p % len(TERMINAL_RUN_STATUSES)] for p in range(procs)]
    results = run_in_processes(
        terminal_race_worker,
        [(str(root), pairs, statuses[p], p, barrier, p % 2 == 1) for p in range(procs)],
        out_dir=tmp_path / "out",
        timeout=90,
    )

    for thread_id, run_id in pairs:
        winners = [
            (p, outcome)
            for p, result in enumerate(results)
            for outcome in result
            if outcome["run"] == run_id and outcome["won"]
        ]
        assert len(winners) == 1, f"{run_id}: {len(winners)} winners"
        proc, outcome = winners[0]
        losers = sum(1 for r in results for o in r if o["run"] == run_id and not o["won"])
        assert losers == procs - 1
        on_disk = store.get_run(thread_id, run_id)
        assert sv(on_disk.status) == statuses[proc]
        assert on_disk == Run.from_dict(outcome["record"])
        assert on_disk.last_error is not None
        assert on_disk.last_error.message == f"set by process {proc}"


def test_cancel_racing_completion_agrees_with_disk(tmp_path: Path) -> None:
    """1,000 running runs (one per thread, each with an open message_creation step; 200
    of them held by a live worker, so that cancelling them takes the `cancelling` path).
    One process completes every run while another cancels it, run by run in step."""
    root = tmp_path / "store"
    store = ThreadStore(root)
    setups = [(str(root), 50, True)] * 4 + [(str(root), 200, False)] * 4
    made = run_in_processes(
        setup_active_runs_worker, setups, out_dir=tmp_path / "setup", timeout=120
    )
    rows = [row for result in made for row in result]
    assert len(rows) == 1000
    held = {row[1] for result in made[:4] for row in result}
    pairs = [[t, r] for t, r, _ in rows]

    barrier = SPAWN.Barrier(2)
    results = run_in_processes(
        race_side_worker,
        [("complete", str(root), pairs, barrier, 1), ("cancel", str(root), pairs, barrier, 2)],
        out_dir=tmp_path / "race",
        timeout=150,
    )
    completer = {row[0]: row for row in results[0]}
    canceller = {row[0]: row for row in results[1]}

    seen: Counter[str] = Counter()
    for thread_id, run_id, step_id in rows:
        _, c_kind, c_status, reply_id = completer[run_id]
        _, x_kind, x_status = canceller[run_id]
        final = store.get_run(thread_id, run_id)
        replies = [
            m
            for m in store.list_messages(thread_id)
            if m.role == "assistant" and m.run_id == run_id
        ]
        step = store.get_step(thread_id, run_id, step_id)
        told = (c_kind, c_status, x_kind, x_status)
        if x_kind == "returned" and x_status == "cancelling":
            # Cancel got in first, the run's worker was live: completion must end it
            # cancelled instead of completed.
            assert run_id in held, told
            assert (c_kind, c_status) == ("returned", "cancelled"), told
            seen["cancelling then cancelled"] += 1
        elif x_kind == "returned" and x_status == "cancelled":
            assert (c_kind, c_status) == ("terminal", "cancelled"), told
            seen["cancelled at once"] += 1
        elif x_kind == "terminal" and x_status == "completed":
            assert (c_kind, c_status) == ("returned", "completed"), told
            seen["completed"] += 1
        else:
            pytest.fail(f"{run_id}: an outcome the contract does not allow: {told}")

        if seen_cancelled := (sv(final.status) == "cancelled"):
            assert x_kind == "returned", told
            assert replies == [], f"{run_id} ended cancelled but has an assistant reply"
            assert sv(step.status) == "cancelled"
        else:
            assert sv(final.status) == "completed", told
            assert [m.id for m in replies] == [reply_id]
            assert sv(step.status) == "completed"
        assert seen_cancelled == (c_status == "cancelled")
    # Both sides must really have raced: each kind of outcome happened.
    assert seen["completed"] > 0, seen
    assert seen["cancelled at once"] + seen["cancelling then cancelled"] > 0, seen


def test_racing_creators_of_one_thread_id(tmp_path: Path) -> None:
    procs = 20
    root = tmp_path / "store"
    store = ThreadStore(root)
    thread_id = new_thread().id
    barrier = SPAWN.Barrier(procs)
    results = run_in_processes(
        create_same_thread_worker,
        [(str(root), thread_id, p, barrier) for p in range(procs)],
        out_dir=tmp_path / "out",
        timeout=90,
    )
    assert sorted(results) == ["created"] + ["exists"] * (procs - 1)
    winner = results.index("created")
    meta = root / thread_id / "meta.json"
    on_disk = json.loads(meta.read_bytes())
    assert on_disk["id"] == thread_id
    assert on_disk["metadata"] == {"proc": str(winner)}
    assert store.get_thread(thread_id).metadata == {"proc": str(winner)}
    assert store.list_thread_ids() == [thread_id]
    assert [t.id for t in store.list_threads().items] == [thread_id]


def test_racing_create_run_on_one_thread_has_one_winner(tmp_path: Path) -> None:
    procs, rounds = 8, 10
    root = tmp_path / "store"
    store = ThreadStore(root)
    thread_ids = [make_thread(store).id for _ in range(rounds)]
    barrier = SPAWN.Barrier(procs)
    results = run_in_processes(
        create_run_race_worker,
        [(str(root), thread_ids, barrier) for _ in range(procs)],
        out_dir=tmp_path / "out",
        timeout=90,
    )
    for thread_id in thread_ids:
        outcomes = [o for result in results for o in result if o[0] == thread_id]
        created = [o[2] for o in outcomes if o[1] == "created"]
        busy = [o for o in outcomes if o[1] == "busy"]
        assert len(created) == 1, f"{thread_id}: {len(created)} runs started"
        assert len(busy) == procs - 1
        assert [r.id for r in store.list_runs(thread_id)] == created
        assert store.active_run(thread_id).id == created[0]
