"""`manage.py store_check [--repair]`: what it reports, what repair does, and that repair
never deletes data that parses. Exit status: 0 healthy, 1 problems, 2 unusable."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import socket
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from reliability_testkit import manage

from stores import (
    WORKER_LOST,
    RunRef,
    RunStatus,
    ThreadStore,
    WorkerHeartbeat,
    new_message,
    new_run,
    new_thread,
)


def store_check(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("store_check", *args, stdout=out, stderr=err)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue() + err.getvalue()
    return 0, out.getvalue() + err.getvalue()


def aged(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def failed_behind_the_stores_back(store: ThreadStore, root: Path) -> tuple[str, str, Path]:
    """A run whose record says `failed` without the journal knowing: its status.json
    rewritten behind the store's back (and out of the work queue, as a failed run is).
    Returns the thread ID, the run ID and the record's path."""
    thread = store.create_thread(new_thread())
    run = store.create_run(thread.id, new_run(thread.id))
    status = root / thread.id / "runs" / run.id / "status.json"
    status.write_text(json.dumps({**json.loads(status.read_text()), "status": "failed"}))
    (root / ".threadsite" / "queue" / f"{run.id}.{thread.id}").unlink()
    return thread.id, run.id, status


DATA_FILES = ("meta.json", "messages.jsonl", "status.json")


def parsing_files(root: Path) -> dict[str, str]:
    """Every record and log of the store that parses, with a hash of its content: what
    repair must never delete. (Leases, drafts and queue markers are the work queue's
    hints, which ending a run removes by design.)"""
    found = {}
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        parts = path.relative_to(root).parts
        if not (path.name in DATA_FILES or (len(parts) == 5 and parts[3] == "steps")):
            continue
        if parts[0].startswith(".trash-"):
            continue
        data = path.read_bytes()
        try:
            if path.suffix == ".jsonl":
                lines = [line for line in data.split(b"\n") if line.strip()]
                for line in lines:
                    json.loads(line)
            else:
                json.loads(data)
        except ValueError:
            continue
        found[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return found


def held_run(store: ThreadStore, worker_id: str, lease_seconds: float) -> tuple[str, str]:
    thread = store.create_thread(new_thread())
    run = store.create_run(thread.id, new_run(thread.id))
    claimed = store.claim_run(
        RunRef(run_id=run.id, thread_id=thread.id),
        worker_id=worker_id,
        lease_seconds=lease_seconds,
        run_timeout=3600,
    )
    assert claimed is not None
    return thread.id, run.id


def beat(store: ThreadStore, worker_id: str, pid: int) -> None:
    now = time.time()
    store.record_heartbeat(
        WorkerHeartbeat(
            worker_id=worker_id,
            host=socket.gethostname(),
            pid=pid,
            backend="echo",
            concurrency=1,
            running=1,
            started_at=now,
            seen_at=now,
        )
    )


def test_a_healthy_store_exits_0(thread_store: ThreadStore) -> None:
    thread = thread_store.create_thread(new_thread({"k": "v"}))
    thread_store.append_message(thread.id, new_message(thread.id, "user", "hello"))
    run = thread_store.create_run(thread.id, new_run(thread.id))
    thread_store.cancel_run(thread.id, run.id)
    code, output = store_check()
    assert code == 0, output
    assert "healthy" in output
    assert "1 threads, 1 messages, 1 runs" in output


def test_every_problem_is_reported_and_repair_fixes_what_it_can(
    thread_store: ThreadStore, threadsite_store_root: Path
) -> None:
    store, root = thread_store, threadsite_store_root
    # A torn line (a crash mid-append) between two good messages, and a line that is
    # JSON but no message (another program's): reported both; only the torn one moves.
    torn = store.create_thread(new_thread())
    first = store.append_message(torn.id, new_message(torn.id, "user", "first"))
    log = root / torn.id / "messages.jsonl"
    with log.open("ab") as handle:
        handle.write(b'{"id": "msg_torn", "content": [{"ty')
    second = store.append_message(torn.id, new_message(torn.id, "user", "second"))
    with log.open("ab") as handle:
        handle.write(b'{"foreign": "record"}\n')
    # Runs only a dead worker could move on.
    lost_t, lost_r = held_run(store, "gone-worker", lease_seconds=0.01)
    cancelling_t, cancelling_r = held_run(store, "gone-worker-2", lease_seconds=0.01)
    (root / cancelling_t / "runs" / cancelling_r / "lease.json").unlink()
    store.force_update_run_status(cancelling_t, cancelling_r, RunStatus.CANCELLING)
    # Runs that are fine: a live lease, and a lapsed lease whose worker still beats.
    live_t, live_r = held_run(store, "live-worker", lease_seconds=3600)
    slow_t, slow_r = held_run(store, "slow-worker", lease_seconds=0.01)
    beat(store, "slow-worker", os.getpid())
    # A queued run the work queue lost.
    unqueued = store.create_thread(new_thread())
    waiting = store.create_run(unqueued.id, new_run(unqueued.id))
    (root / ".threadsite" / "queue" / f"{waiting.id}.{unqueued.id}").unlink()
    # A temp file old enough to be an orphan, and one young enough to be in flight.
    old_temp = root / torn.id / ".tmp-meta.json-0123456789ab"
    old_temp.write_text("{}")
    aged(old_temp, 3600)
    young_temp = root / torn.id / ".tmp-meta.json-ba9876543210"
    young_temp.write_text("{}")
    # What a crash in delete_thread leaves, a record that does not parse, and a journal
    # that missed a change (its last status is written behind the store's back).
    (root / ".trash-thread_gone-1a2b3c4d" / "runs").mkdir(parents=True)
    damaged = store.create_thread(new_thread())
    (root / damaged.id / "meta.json").write_text('{"id": ')
    _, behind_run, status_path = failed_behind_the_stores_back(store, root)
    aged(status_path, 60)
    before = parsing_files(root)

    code, output = store_check()
    assert code == 1, output
    for kind, where in [
        ("unparsable_line", f"{torn.id}/messages.jsonl"),
        ("stuck_run", f"{lost_t}/runs/{lost_r}"),
        ("stuck_run", f"{cancelling_t}/runs/{cancelling_r}"),
        ("unqueued_run", f"{unqueued.id}/runs/{waiting.id}"),
        ("orphan_temp_file", f"{torn.id}/.tmp-meta.json-0123456789ab"),
        ("trash_dir", ".trash-thread_gone-1a2b3c4d"),
        ("bad_record", f"{damaged.id}/meta.json"),
        ("stale_journal", ".threadsite/journal.jsonl"),
    ]:
        assert f"{kind} (" in output, (kind, output)
        assert where in output, (where, output)
    assert live_r not in output and slow_r not in output

    code, output = store_check("--repair")
    assert code == 1, output  # the damaged meta.json and the foreign line remain
    assert "After repair:" in output
    after = output.split("After repair:")[1]
    assert "bad_record (" in after and "unparsable_line (" in after
    for kind in ("stuck_run", "unqueued_run", "trash_dir", "stale_journal"):
        assert kind not in after, (kind, after)

    # Stuck runs ended as the contract says, with a clear error.
    lost = store.get_run(lost_t, lost_r)
    assert lost.status is RunStatus.FAILED
    assert lost.last_error == WORKER_LOST
    assert store.get_run(cancelling_t, cancelling_r).status is RunStatus.CANCELLED
    assert store.get_run(live_t, live_r).status is RunStatus.IN_PROGRESS
    assert store.get_run(slow_t, slow_r).status is RunStatus.IN_PROGRESS
    assert RunRef(run_id=waiting.id, thread_id=unqueued.id) in store.queued_runs()
    # The torn line moved to the quarantine, word for word; the messages stayed.
    assert [m.id for m in store.list_messages(torn.id)] == [first.id, second.id]
    quarantined = list((root / ".threadsite" / "quarantine").iterdir())
    assert len(quarantined) == 1
    assert quarantined[0].read_bytes() == b'{"id": "msg_torn", "content": [{"ty\n'
    assert b'{"foreign": "record"}' in log.read_bytes()
    # Disposable things went, young temp files stayed, the journal tells the truth.
    assert not old_temp.exists() and young_temp.exists()
    assert not (root / ".trash-thread_gone-1a2b3c4d").exists()
    assert store.catalog().runs[behind_run].status is RunStatus.FAILED
    # Nothing that parsed was deleted (the journal and logs were rewritten, not lost).
    after_files = parsing_files(root)
    for path, digest in before.items():
        assert path in after_files, f"repair deleted {path}"
        if not path.startswith((f"{torn.id}/messages", lost_t, cancelling_t)):
            assert after_files[path] == digest, f"repair changed {path}"

    # The rest is the operator's call: once they remove the damage, the store is healthy.
    (root / damaged.id / "meta.json").unlink()
    lines = log.read_bytes().split(b"\n")
    log.write_bytes(b"\n".join(line for line in lines if b"foreign" not in line))
    young_temp.unlink()
    code, output = store_check()
    assert code == 0, output


def test_young_temp_files_wait_for_the_grace_period(
    thread_store: ThreadStore, threadsite_store_root: Path
) -> None:
    thread = thread_store.create_thread(new_thread())
    temp = threadsite_store_root / thread.id / ".tmp-meta.json-00aa11bb22cc"
    temp.write_text("{}")
    code, output = store_check("--repair")
    assert code == 1 and temp.exists(), output
    code, output = store_check("--repair", "--grace", "0")
    assert code == 0 and not temp.exists(), output


def test_queued_runs_without_a_live_worker_are_a_note_not_a_problem(
    thread_store: ThreadStore, threadsite_store_root: Path
) -> None:
    thread = thread_store.create_thread(new_thread())
    run = thread_store.create_run(thread.id, new_run(thread.id))
    status = threadsite_store_root / thread.id / "runs" / run.id / "status.json"
    record = json.loads(status.read_text())
    status.write_text(json.dumps({**record, "created_at": int(time.time()) - 3600}))
    aged(status, 60)
    code, output = store_check()
    assert code == 0, output
    assert "note: waiting_run" in output and "start one" in output


def test_a_store_whose_locks_do_not_hold_exits_2(
    thread_store: ThreadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fcntl, "flock", lambda fd, operation: None)
    code, output = store_check()
    assert code == 2
    assert "do not exclude another process" in output


def test_the_exit_status_from_the_shell(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = ThreadStore(data_dir / "threads")
    thread = store.create_thread(new_thread())
    store.append_message(thread.id, new_message(thread.id, "user", "hi"))
    assert manage(data_dir, "store_check").returncode == 0
    with (data_dir / "threads" / thread.id / "messages.jsonl").open("ab") as handle:
        handle.write(b"\x00torn")
    result = manage(data_dir, "store_check")
    assert result.returncode == 1, result.stdout
    assert "unparsable_line" in result.stdout
    result = manage(data_dir, "store_check", "--repair")
    assert result.returncode == 0, result.stdout
    assert "set 1 torn line(s)" in result.stdout


def test_with_no_grace_a_journal_behind_a_fresh_record_is_rebuilt(
    thread_store: ThreadStore, threadsite_store_root: Path
) -> None:
    # `--grace 0` says nothing else runs: a journal line missing for a record written a
    # moment ago will never come (its writer died), so it is not given time.
    _, run_id, _ = failed_behind_the_stores_back(thread_store, threadsite_store_root)

    code, output = store_check()
    assert code == 0, output  # while writers may run, a fresh record is given time

    code, output = store_check("--repair", "--grace", "0")
    assert code == 0, output
    assert "stale_journal (" in output.split("Repair:")[0]
    assert "rebuilt the catalog journal" in output
    assert ThreadStore(threadsite_store_root).catalog().runs[run_id].status is RunStatus.FAILED


def test_a_record_settling_during_the_repair_does_not_fail_the_check_after_it(
    thread_store: ThreadStore, threadsite_store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A journal line still on its way when the repair looked, for a record that is old
    # enough to count by the time the repair is done: the check after the repair must
    # not report what the repair was right to leave.
    from stores.integrity import JOURNAL_LAG_SECONDS
    from threadsite.management.commands import store_check as command

    thread_id, _, status = failed_behind_the_stores_back(thread_store, threadsite_store_root)
    aged(status, JOURNAL_LAG_SECONDS - 0.5)
    orphan = threadsite_store_root / thread_id / ".tmp-meta.json-00aa11bb22cc"
    orphan.write_text("{}")
    aged(orphan, 3600)  # something for the repair to do
    real_repair = command.repair_store

    def slow_repair(*args, **kwargs) -> list[str]:
        done = real_repair(*args, **kwargs)
        time.sleep(1.0)  # the record settles while the repair finishes
        return done

    monkeypatch.setattr(command, "repair_store", slow_repair)
    code, output = store_check("--repair")
    assert "removed stale temp file" in output
    assert code == 0, output
    assert "stale_journal" not in output

    code, output = store_check()  # a later check sees the journal for what it is
    assert code == 1 and "stale_journal (" in output, output
