"""Directories written by the reference server (narrower record shapes, `step-` step IDs,
no index of ours) open and read correctly."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from stores_testkit import make_thread, rs, ss, sv

from stores import (
    RunError,
    StoreError,
    ThreadBusy,
    ThreadStore,
    new_message,
    new_run,
    new_step,
)

T0 = 1_700_000_000


def hex32() -> str:
    return secrets.token_hex(16)


def blocks(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"value": text, "annotations": []}}]


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def ref_thread(root: Path, created_at: int = T0, metadata: dict[str, str] | None = None) -> str:
    thread_id = f"thread_{hex32()}"
    write_json(
        root / thread_id / "meta.json",
        {
            "id": thread_id,
            "object": "thread",
            "created_at": created_at,
            "metadata": metadata or {},
        },
    )
    return thread_id


def ref_message(thread_id: str, role: str, text: str, run_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": f"msg_{hex32()}",
        "object": "thread.message",
        "created_at": T0 + 1,
        "thread_id": thread_id,
        "role": role,
        "content": blocks(text),
    }
    if run_id is not None:
        message["run_id"] = run_id
    return message


def ref_run(root: Path, thread_id: str, status: str, **extra: Any) -> str:
    run_id = f"run_{hex32()}"
    record = {
        "id": run_id,
        "object": "thread.run",
        "created_at": extra.pop("created_at", T0 + 2),
        "thread_id": thread_id,
        "status": status,
        "model": "gpt-4o",
        **extra,
    }
    write_json(root / thread_id / "runs" / run_id / "status.json", record)
    return run_id


def ref_step(
    root: Path, thread_id: str, run_id: str, status: str, step_id: str | None = None, **extra: Any
) -> str:
    step_id = step_id or f"step-{hex32()}"
    record = {
        "id": step_id,
        "object": "thread.run.step",
        "run_id": run_id,
        "thread_id": thread_id,
        "step_type": "message_creation",
        "status": status,
        "created_at": extra.pop("created_at", T0 + 3),
        **extra,
    }
    write_json(root / thread_id / "runs" / run_id / "steps" / f"{step_id}.json", record)
    return step_id


def find_message_id(details: Any) -> str | None:
    """The message a step names, wherever its step_details keep it."""
    if isinstance(details, dict):
        if isinstance(details.get("message_id"), str):
            return details["message_id"]
        for value in details.values():
            if (found := find_message_id(value)) is not None:
                return found
    return None


def test_reference_thread_reads(tmp_path: Path) -> None:
    root = tmp_path / "store"
    thread_id = ref_thread(root, metadata={"customer": "acme"})
    meta = root / thread_id / "meta.json"
    write_json(meta, {**json.loads(meta.read_text()), "future_field": {"x": [1, 2]}})
    store = ThreadStore(root)
    thread = store.get_thread(thread_id)
    assert thread.id == thread_id
    assert thread.created_at == T0
    assert thread.metadata == {"customer": "acme"}
    assert store.list_thread_ids() == [thread_id]


def test_reference_messages_read_with_v2_defaults(tmp_path: Path) -> None:
    root = tmp_path / "store"
    thread_id = ref_thread(root)
    run_id = f"run_{hex32()}"
    question = ref_message(thread_id, "user", "What is 2+2?")
    answer = ref_message(thread_id, "assistant", "4", run_id=run_id)
    answer["future_field"] = "ignored or kept"
    log = root / thread_id / "messages.jsonl"
    lines = [json.dumps(question), "", json.dumps(answer)]
    log.write_text("\n".join(lines) + "\n")

    store = ThreadStore(root)
    messages = store.list_messages(thread_id)
    assert [m.id for m in messages] == [question["id"], answer["id"]]
    first, second = messages
    assert (first.role, first.text, first.run_id) == ("user", "What is 2+2?", None)
    assert (second.role, second.text, second.run_id) == ("assistant", "4", run_id)
    for message in messages:
        assert message.thread_id == thread_id
        assert message.created_at == T0 + 1
        assert message.assistant_id is None
        assert message.metadata == {}
        assert message.status == "completed"
        assert message.to_dict()["object"] == "thread.message"
    assert store.last_message(thread_id).id == answer["id"]


def test_appending_to_a_reference_log_with_a_torn_tail(tmp_path: Path) -> None:
    root = tmp_path / "store"
    thread_id = ref_thread(root)
    kept = ref_message(thread_id, "user", "kept")
    torn = json.dumps(ref_message(thread_id, "user", "torn"))[:40]
    (root / thread_id / "messages.jsonl").write_text(json.dumps(kept) + "\n" + torn)
    store = ThreadStore(root)
    assert [m.id for m in store.list_messages(thread_id)] == [kept["id"]]
    ours = new_message(thread_id, "user", "after the crash")
    store.append_message(thread_id, ours)
    assert [m.id for m in store.list_messages(thread_id)] == [kept["id"], ours.id]


def test_reference_runs_read_with_v2_defaults(tmp_path: Path) -> None:
    root = tmp_path / "store"
    thread_id = ref_thread(root)
    failed = ref_run(
        root,
        thread_id,
        "failed",
        created_at=T0 + 2,
        last_error={"code": "rate_limit_exceeded", "message": "Too many requests"},
        future_field=[1, 2, 3],
    )
    completed = ref_run(root, thread_id, "completed", created_at=T0 + 10)
    store = ThreadStore(root)

    run = store.get_run(thread_id, failed)
    assert run.id == failed
    assert run.thread_id == thread_id
    assert sv(run.status) == "failed"
    assert run.model == "gpt-4o"
    assert run.created_at == T0 + 2
    assert run.last_error == RunError(code="rate_limit_exceeded", message="Too many requests")
    assert run.instructions is None
    assert run.assistant_id is None
    assert run.started_at is None
    assert run.usage is None
    assert run.metadata == {}
    assert run.to_dict()["object"] == "thread.run"

    other = store.get_run(thread_id, completed)
    assert sv(other.status) == "completed"
    assert other.last_error is None
    assert [r.id for r in store.list_runs(thread_id)] == [completed, failed]
    assert store.latest_run(thread_id).id == completed
    assert store.active_run(thread_id) is None


def test_reference_steps_read_with_v2_defaults(tmp_path: Path) -> None:
    root = tmp_path / "store"
    thread_id = ref_thread(root)
    run_id = ref_run(root, thread_id, "failed", last_error={"code": "server_error", "message": "x"})
    message_id = f"msg_{hex32()}"
    done = ref_step(
        root,
        thread_id,
        run_id,
        "completed",
        created_at=T0 + 3,
        completed_at=T0 + 4,
        step_details={"message_id": message_id},
    )
    broken = ref_step(
        root,
        thread_id,
        run_id,
        "failed",
        created_at=T0 + 5,
        failed_at=T0 + 6,
        error="model timed out",
        future_field={"nested": True},
    )
    store = ThreadStore(root)

    step = store.get_step(thread_id, run_id, done)
    assert step.id == done
    assert step.type == "message_creation"
    assert sv(step.status) == "completed"
    assert step.completed_at == T0 + 4
    assert step.last_error is None
    assert find_message_id(step.step_details) == message_id

    failure = store.get_step(thread_id, run_id, broken)
    assert sv(failure.status) == "failed"
    assert failure.failed_at == T0 + 6
    assert failure.last_error == RunError(code="server_error", message="model timed out")
    assert failure.to_dict()["object"] == "thread.run.step"
    assert failure.to_dict()["type"] == "message_creation"

    assert [s.id for s in store.list_steps(thread_id, run_id)] == [done, broken]


def test_reference_steps_with_equal_created_at_fall_back_to_id_order(tmp_path: Path) -> None:
    root = tmp_path / "store"
    thread_id = ref_thread(root)
    run_id = ref_run(root, thread_id, "completed")
    # Written in an order that is neither ID order nor reverse ID order.
    ids = {name: f"step-{name * 32}" for name in ("8", "f", "0", "c", "3")}
    for name in ids:
        ref_step(root, thread_id, run_id, "completed", step_id=ids[name], created_at=T0 + 3)
    earlier = ref_step(root, thread_id, run_id, "completed", step_id="step-" + "e" * 32)
    data = json.loads(
        (root / thread_id / "runs" / run_id / "steps" / f"{earlier}.json").read_text()
    )
    data["created_at"] = T0 + 1
    write_json(root / thread_id / "runs" / run_id / "steps" / f"{earlier}.json", data)

    listed = [s.id for s in ThreadStore(root).list_steps(thread_id, run_id)]
    assert listed == [earlier, *sorted(ids.values())]


def test_updating_a_reference_step_keeps_its_id_and_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    thread_id = ref_thread(root)
    run_id = ref_run(root, thread_id, "in_progress")
    step_id = ref_step(root, thread_id, run_id, "in_progress")
    store = ThreadStore(root)
    updated = store.update_step_status(thread_id, run_id, step_id, ss("completed"))
    assert updated.id == step_id
    assert sv(store.get_step(thread_id, run_id, step_id).status) == "completed"
    steps_dir = root / thread_id / "runs" / run_id / "steps"
    assert sorted(p.name for p in steps_dir.iterdir() if not p.name.startswith(".")) == [
        f"{step_id}.json"
    ]


def test_reference_thread_without_an_index_entry_is_found(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ThreadStore(root)
    ours = [make_thread(store).id for _ in range(3)]
    store.list_threads()  # whatever index the store keeps now exists
    theirs = ref_thread(root, metadata={"from": "reference"})
    assert store.get_thread(theirs).metadata == {"from": "reference"}
    assert sorted(store.list_thread_ids()) == sorted([*ours, theirs])
    # And it is a working thread.
    message = new_message(theirs, "user", "hello from threadsite")
    store.append_message(theirs, message)
    assert [m.id for m in store.list_messages(theirs)] == [message.id]
    run = store.create_run(theirs, new_run(theirs))
    assert store.get_run(theirs, run.id) == run


def test_a_store_written_by_the_reference_lists_its_threads_newest_first(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    made = [ref_thread(root, created_at=T0 + offset) for offset in (30, 10, 50, 20, 40)]
    by_age = [t for _, t in sorted(zip((30, 10, 50, 20, 40), made, strict=True), reverse=True)]
    store = ThreadStore(root)
    first = store.list_threads(limit=3)
    assert [t.id for t in first.items] == by_age[:3]
    assert first.next_cursor is not None
    rest = store.list_threads(limit=3, cursor=first.next_cursor)
    assert [t.id for t in rest.items] == by_age[3:]
    assert rest.next_cursor is None


def test_check_accepts_reference_records(tmp_path: Path) -> None:
    root = tmp_path / "store"
    thread_id = ref_thread(root)
    (root / thread_id / "messages.jsonl").write_text(
        json.dumps(ref_message(thread_id, "user", "hi")) + "\n"
    )
    run_id = ref_run(root, thread_id, "failed", last_error={"code": "server_error", "message": "x"})
    ref_step(root, thread_id, run_id, "failed", error="boom", failed_at=T0 + 4)
    report = ThreadStore(root).check()
    kinds = {p.kind for p in report.problems}
    assert "bad_record" not in kinds, report.problems
    assert "unparsable_line" not in kinds, report.problems


@pytest.mark.parametrize("status", ["queued", "in_progress", "requires_action", "cancelling"])
def test_an_active_reference_run_keeps_the_thread_busy(tmp_path: Path, status: str) -> None:
    """One active run per thread holds for runs the reference started, too."""
    root = tmp_path / "store"
    thread_id = ref_thread(root)
    run_id = ref_run(root, thread_id, status)
    store = ThreadStore(root)
    active = store.active_run(thread_id)
    assert active is not None
    assert active.id == run_id
    with pytest.raises(ThreadBusy):
        store.create_run(thread_id, new_run(thread_id))
    with pytest.raises(ThreadBusy):
        store.append_message(thread_id, new_message(thread_id, "user", "hello?"))
    assert [r.id for r in store.list_runs(thread_id)] == [run_id]


def test_reference_run_lifecycle_continues_in_threadsite(tmp_path: Path) -> None:
    root = tmp_path / "store"
    thread_id = ref_thread(root)
    run_id = ref_run(root, thread_id, "in_progress")
    store = ThreadStore(root)
    store.append_step(thread_id, run_id, new_step(thread_id, run_id))
    reply = new_message(thread_id, "assistant", "done", run_id=run_id)
    finished = store.complete_run(thread_id, run_id, reply)
    assert sv(finished.status) == "completed"
    assert [m.id for m in store.list_messages(thread_id)] == [reply.id]
    with pytest.raises(StoreError):
        store.update_run_status(thread_id, run_id, rs("in_progress"))
