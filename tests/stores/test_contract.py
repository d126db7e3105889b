"""Every operation of the store contract, and of the additions, with its meaning."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from stores_testkit import (
    TERMINAL_RUN_STATUSES,
    assert_not_found,
    make_held_run,
    make_run,
    make_step,
    make_thread,
    message_ids,
    rs,
    ss,
    sv,
    tree_snapshot,
)

from stores import (
    AlreadyExists,
    IntegrityReport,
    Run,
    RunError,
    RunInTerminalState,
    RunNotFound,
    RunStep,
    RunStepNotFound,
    RunUsage,
    StoreError,
    Thread,
    ThreadBusy,
    ThreadMessage,
    ThreadNotFound,
    ThreadStore,
    new_message,
    new_run,
    new_step,
    new_thread,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
HEX32 = "[0-9a-f]{32}"
MISSING_THREAD = "thread_" + "0" * 32
MISSING_RUN = "run_" + "0" * 32
MISSING_STEP = "step_" + "0" * 32


def now() -> int:
    return int(time.time())


def stamped(value: int | None, before: int) -> bool:
    return isinstance(value, int) and before <= value <= now() + 1


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def problem_paths(store: ThreadStore, report: IntegrityReport, kind: str) -> set[Path]:
    root = Path(store.root)
    found = set()
    for problem in report.problems:
        if problem.kind == kind:
            path = Path(problem.path)
            found.add((path if path.is_absolute() else root / path).resolve())
    return found


# ------------------------------------------------------------------ the package


def test_package_never_imports_django() -> None:
    code = (
        "import importlib, pkgutil, sys, stores\n"
        "for mod in pkgutil.walk_packages(stores.__path__, 'stores.'):\n"
        "    importlib.import_module(mod.name)\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_store_creates_a_missing_root_and_its_parents(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "c"
    store = ThreadStore(root)
    assert root.is_dir()
    assert store.list_thread_ids() == []
    # Opening an existing store again is fine and sees what the first one wrote.
    thread = make_thread(store)
    assert ThreadStore(root).get_thread(thread.id) == thread


# ------------------------------------------------------------------------ threads


def test_create_and_get_thread(store: ThreadStore, store_root: Path) -> None:
    thread = new_thread({"topic": "billing", "lang": "en"})
    assert store.create_thread(thread) == thread
    got = store.get_thread(thread.id)
    assert got == thread
    assert got.metadata == {"topic": "billing", "lang": "en"}
    on_disk = read_json(store_root / thread.id / "meta.json")
    assert on_disk["id"] == thread.id
    assert on_disk["object"] == "thread"
    assert on_disk["created_at"] == thread.created_at
    assert isinstance(on_disk["created_at"], int)
    assert on_disk["metadata"] == {"topic": "billing", "lang": "en"}


def test_duplicate_thread_id_raises_already_exists_and_keeps_meta_bytes(
    store: ThreadStore, store_root: Path
) -> None:
    thread = make_thread(store, {"who": "first"})
    meta = store_root / thread.id / "meta.json"
    before = meta.read_bytes()
    impostor = Thread(id=thread.id, created_at=thread.created_at + 5, metadata={"who": "second"})
    with pytest.raises(AlreadyExists):
        store.create_thread(impostor)
    assert meta.read_bytes() == before
    assert store.get_thread(thread.id).metadata == {"who": "first"}


def test_get_missing_thread_raises_thread_not_found(store: ThreadStore) -> None:
    with pytest.raises(ThreadNotFound):
        store.get_thread(MISSING_THREAD)


def test_list_thread_ids_lists_threads_and_nothing_else(
    store: ThreadStore, store_root: Path
) -> None:
    threads = [make_thread(store) for _ in range(3)]
    # Exercise everything that may leave the store's own files and dirs in the root.
    run = make_run(store, threads[0].id, "in_progress")
    make_step(store, threads[0].id, run.id)
    store.append_message(threads[1].id, new_message(threads[1].id, "user", "hi"))
    store.list_threads()
    store.check()
    # Things other people (or crashes) leave lying around.
    hidden = store_root / ".hidden"
    hidden.mkdir()
    (hidden / "meta.json").write_text(json.dumps(new_thread().to_dict()))
    (store_root / "notes.txt").write_text("not a thread")
    (store_root / ".tmp-meta.json-0001").write_text("{")
    (store_root / f"thread_{'a' * 32}.tmp").write_text("{}")
    (store_root / f"thread_{'b' * 32}").write_text(json.dumps(new_thread().to_dict()))
    (store_root / "scratch").mkdir()  # a directory with no meta.json is not a thread

    ids = store.list_thread_ids()
    assert sorted(ids) == sorted(t.id for t in threads)
    assert len(ids) == len(set(ids))
    for thread_id in ids:
        store.get_thread(thread_id)


# ----------------------------------------------------------------------- messages


def test_append_and_list_messages_keep_append_order_and_content(store: ThreadStore) -> None:
    thread = make_thread(store)
    texts = [f"message {i}" for i in range(30)]
    texts[7] = 'two lines\nand a separator \u2028 and \u2029, quotes " and \\ and \u00e9\u2713'
    appended = []
    for i, text in enumerate(texts):
        role = "user" if i % 2 == 0 else "assistant"
        msg = new_message(thread.id, role, text)
        assert store.append_message(thread.id, msg) == msg
        appended.append(msg)
    listed = store.list_messages(thread.id)
    assert listed == appended
    assert [m.text for m in listed] == texts
    assert [m.role for m in listed] == [m.role for m in appended]
    assert all(m.thread_id == thread.id for m in listed)


def test_messages_are_one_json_line_each(store: ThreadStore, store_root: Path) -> None:
    thread = make_thread(store)
    msgs = [new_message(thread.id, "user", f"line {i}\nwith a newline") for i in range(5)]
    for msg in msgs:
        store.append_message(thread.id, msg)
    lines = (store_root / thread.id / "messages.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""  # every line is terminated
    records = [json.loads(line) for line in lines[:-1]]
    assert [r["id"] for r in records] == [m.id for m in msgs]
    assert all(r["object"] == "thread.message" for r in records)


def test_append_message_to_missing_thread(store: ThreadStore, store_root: Path) -> None:
    with pytest.raises(ThreadNotFound):
        store.append_message(MISSING_THREAD, new_message(MISSING_THREAD, "user", "hi"))
    assert not (store_root / MISSING_THREAD).exists()
    with pytest.raises(ThreadNotFound):
        store.list_messages(MISSING_THREAD)


def test_list_messages_of_a_thread_without_messages_is_empty(store: ThreadStore) -> None:
    thread = make_thread(store)
    assert store.list_messages(thread.id) == []
    assert store.last_message(thread.id) is None
    page = store.latest_messages(thread.id)
    assert page.items == []
    assert page.next_cursor is None


# --------------------------------------------------------------------------- runs


def test_create_and_get_run(store: ThreadStore, store_root: Path) -> None:
    thread = make_thread(store)
    run = new_run(thread.id, model="gpt-test", instructions="be brief", metadata={"k": "v"})
    assert store.create_run(thread.id, run) == run
    got = store.get_run(thread.id, run.id)
    assert got == run
    assert sv(got.status) == "queued"
    on_disk = read_json(store_root / thread.id / "runs" / run.id / "status.json")
    assert on_disk["id"] == run.id
    assert on_disk["object"] == "thread.run"
    assert on_disk["thread_id"] == thread.id
    assert on_disk["status"] == "queued"
    assert on_disk["model"] == "gpt-test"
    assert isinstance(on_disk["created_at"], int)


def test_get_run_reports_the_missing_level(store: ThreadStore) -> None:
    thread = make_thread(store)
    with pytest.raises(RunNotFound) as excinfo:
        store.get_run(thread.id, MISSING_RUN)
    assert_not_found(excinfo.value, RunNotFound)
    with pytest.raises(ThreadNotFound) as excinfo2:
        store.get_run(MISSING_THREAD, MISSING_RUN)
    assert_not_found(excinfo2.value, ThreadNotFound)


def test_update_run_status_stamps_started_at_on_in_progress(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id)
    before = now()
    updated = store.update_run_status(thread.id, run.id, rs("in_progress"))
    assert sv(updated.status) == "in_progress"
    assert stamped(updated.started_at, before)
    assert store.get_run(thread.id, run.id) == updated


@pytest.mark.parametrize(
    ("status", "stamp"),
    [
        ("completed", "completed_at"),
        ("failed", "failed_at"),
        ("cancelled", "cancelled_at"),
        ("expired", "expired_at"),
    ],
)
def test_update_run_status_stamps_terminal_timestamp(
    store: ThreadStore, status: str, stamp: str
) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    before = now()
    updated = store.update_run_status(thread.id, run.id, rs(status))
    assert sv(updated.status) == status
    assert stamped(getattr(updated, stamp), before)
    others = {"completed_at", "failed_at", "cancelled_at", "expired_at"} - {stamp}
    assert all(getattr(updated, name) is None for name in others)
    assert ThreadStore(store.root).get_run(thread.id, run.id) == updated


def test_update_run_status_records_last_error(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    error = RunError(code="rate_limit_exceeded", message="slow down")
    updated = store.update_run_status(thread.id, run.id, rs("failed"), error)
    assert updated.last_error == error
    assert store.get_run(thread.id, run.id).last_error == error


def test_update_run_status_guards_only_terminal_states(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id)
    for status in ("requires_action", "in_progress", "cancelling", "in_progress", "queued"):
        assert sv(store.update_run_status(thread.id, run.id, rs(status)).status) == status
    assert sv(store.get_run(thread.id, run.id).status) == "queued"


@pytest.mark.parametrize("terminal", TERMINAL_RUN_STATUSES)
def test_update_run_status_refuses_a_terminal_run(
    store: ThreadStore, store_root: Path, terminal: str
) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    final = store.update_run_status(thread.id, run.id, rs(terminal))
    status_file = store_root / thread.id / "runs" / run.id / "status.json"
    before = status_file.read_bytes()
    for status in ("in_progress", "queued", "completed", "failed", "cancelled"):
        with pytest.raises(RunInTerminalState):
            store.update_run_status(thread.id, run.id, rs(status))
    assert status_file.read_bytes() == before
    assert store.get_run(thread.id, run.id) == final


def test_force_update_run_status_bypasses_the_terminal_guard(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    store.update_run_status(thread.id, run.id, rs("completed"))
    reopened = store.force_update_run_status(thread.id, run.id, rs("in_progress"))
    assert sv(reopened.status) == "in_progress"
    assert sv(store.get_run(thread.id, run.id).status) == "in_progress"
    error = RunError(code="server_error", message="operator repair")
    failed = store.force_update_run_status(thread.id, run.id, rs("failed"), error)
    assert sv(failed.status) == "failed"
    assert failed.last_error == error
    assert store.get_run(thread.id, run.id) == failed
    assert sv(store.force_update_run_status(thread.id, run.id, rs("expired")).status) == "expired"
    with pytest.raises(RunNotFound):
        store.force_update_run_status(thread.id, MISSING_RUN, rs("failed"))


def test_update_run_status_on_missing_run_or_thread(store: ThreadStore) -> None:
    thread = make_thread(store)
    with pytest.raises(RunNotFound) as excinfo:
        store.update_run_status(thread.id, MISSING_RUN, rs("failed"))
    assert_not_found(excinfo.value, RunNotFound)
    with pytest.raises(ThreadNotFound) as excinfo2:
        store.update_run_status(MISSING_THREAD, MISSING_RUN, rs("failed"))
    assert_not_found(excinfo2.value, ThreadNotFound)


# -------------------------------------------------------------------------- steps


def test_append_get_and_list_steps(store: ThreadStore, store_root: Path) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    assert store.list_steps(thread.id, run.id) == []
    step = new_step(thread.id, run.id)
    assert store.append_step(thread.id, run.id, step) == step
    assert store.get_step(thread.id, run.id, step.id) == step
    assert store.list_steps(thread.id, run.id) == [step]
    path = store_root / thread.id / "runs" / run.id / "steps" / f"{step.id}.json"
    on_disk = read_json(path)
    assert on_disk["id"] == step.id
    assert on_disk["object"] == "thread.run.step"
    assert on_disk["type"] == "message_creation"
    assert on_disk["status"] == "in_progress"
    assert on_disk["run_id"] == run.id
    assert on_disk["thread_id"] == thread.id
    assert Path(store.steps_dir(thread.id, run.id)).resolve() == path.parent.resolve()


def test_list_steps_orders_by_created_at_with_ties_in_creation_order(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    base = now() - 1000
    offsets = [5, 0, 5, 0, 3, 5, 0]
    steps = []
    for offset in offsets:
        step = replace(new_step(thread.id, run.id), created_at=base + offset)
        store.append_step(thread.id, run.id, step)
        steps.append(step)
    expected = [s.id for _, _, s in sorted((s.created_at, i, s) for i, s in enumerate(steps))]
    assert [s.id for s in store.list_steps(thread.id, run.id)] == expected


def test_list_steps_made_within_one_second_keep_creation_order(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    steps = [make_step(store, thread.id, run.id) for _ in range(25)]
    assert [s.id for s in store.list_steps(thread.id, run.id)] == [s.id for s in steps]


def test_missing_steps_and_parents_are_reported_as_themselves(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    step = make_step(store, thread.id, run.id)
    cases: list[tuple[type[Exception], Any]] = [
        (RunStepNotFound, lambda: store.get_step(thread.id, run.id, MISSING_STEP)),
        (RunNotFound, lambda: store.get_step(thread.id, MISSING_RUN, step.id)),
        (ThreadNotFound, lambda: store.get_step(MISSING_THREAD, run.id, step.id)),
        (RunNotFound, lambda: store.list_steps(thread.id, MISSING_RUN)),
        (ThreadNotFound, lambda: store.list_steps(MISSING_THREAD, run.id)),
        (
            RunNotFound,
            lambda: store.append_step(thread.id, MISSING_RUN, new_step(thread.id, MISSING_RUN)),
        ),
        (
            ThreadNotFound,
            lambda: store.append_step(
                MISSING_THREAD, MISSING_RUN, new_step(MISSING_THREAD, MISSING_RUN)
            ),
        ),
        (
            RunStepNotFound,
            lambda: store.update_step_status(thread.id, run.id, MISSING_STEP, ss("completed")),
        ),
        (
            RunNotFound,
            lambda: store.update_step_status(thread.id, MISSING_RUN, step.id, ss("completed")),
        ),
        (
            ThreadNotFound,
            lambda: store.update_step_status(MISSING_THREAD, run.id, step.id, ss("completed")),
        ),
        (RunNotFound, lambda: store.cancel_run(thread.id, MISSING_RUN)),
        (ThreadNotFound, lambda: store.cancel_run(MISSING_THREAD, run.id)),
        (RunNotFound, lambda: store.complete_run(thread.id, MISSING_RUN, None)),
        (ThreadNotFound, lambda: store.list_runs(MISSING_THREAD)),
        (ThreadNotFound, lambda: store.active_run(MISSING_THREAD)),
        (ThreadNotFound, lambda: store.latest_run(MISSING_THREAD)),
        (ThreadNotFound, lambda: store.create_run(MISSING_THREAD, new_run(MISSING_THREAD))),
    ]
    for expected, call in cases:
        with pytest.raises(expected) as excinfo:
            call()
        assert_not_found(excinfo.value, expected)
    assert store.list_steps(thread.id, run.id) == [step]


@pytest.mark.parametrize(
    ("status", "stamp"),
    [
        ("completed", "completed_at"),
        ("failed", "failed_at"),
        ("cancelled", "cancelled_at"),
        ("expired", "expired_at"),
    ],
)
def test_update_step_status_stamps_its_timestamp(
    store: ThreadStore, status: str, stamp: str
) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    step = make_step(store, thread.id, run.id)
    before = now()
    updated = store.update_step_status(thread.id, run.id, step.id, ss(status))
    assert sv(updated.status) == status
    assert stamped(getattr(updated, stamp), before)
    assert ThreadStore(store.root).get_step(thread.id, run.id, step.id) == updated


def test_update_step_status_records_an_error(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    step = make_step(store, thread.id, run.id)
    error = RunError(code="server_error", message="model crashed")
    updated = store.update_step_status(thread.id, run.id, step.id, ss("failed"), error)
    assert updated.last_error == error
    assert store.get_step(thread.id, run.id, step.id).last_error == error


# ----------------------------------------------------- records that do not belong


def test_records_whose_owner_disagrees_with_the_arguments_are_refused(
    store: ThreadStore, store_root: Path
) -> None:
    one = make_thread(store)
    two = make_thread(store)
    with pytest.raises(StoreError):
        store.append_message(one.id, new_message(two.id, "user", "wrong thread"))
    with pytest.raises(StoreError):
        store.create_run(one.id, new_run(two.id))
    run = make_run(store, one.id, "in_progress")
    other_run = "run_" + "1" * 32
    with pytest.raises(StoreError):
        store.append_step(one.id, run.id, new_step(one.id, other_run))
    with pytest.raises(StoreError):
        store.append_step(one.id, run.id, new_step(two.id, run.id))
    assert store.list_messages(one.id) == []
    assert store.list_messages(two.id) == []
    assert [r.id for r in store.list_runs(one.id)] == [run.id]
    assert store.list_runs(two.id) == []
    assert store.list_steps(one.id, run.id) == []
    assert not (store_root / two.id / "runs").exists() or not any(
        (store_root / two.id / "runs").iterdir()
    )


def test_records_with_unsafe_ids_are_refused(tmp_path: Path) -> None:
    store = ThreadStore(tmp_path / "store")
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    with pytest.raises(StoreError):
        store.create_thread(replace(new_thread(), id="../evil"))
    with pytest.raises(StoreError):
        store.append_message(thread.id, replace(new_message(thread.id, "user", "x"), id="../m"))
    with pytest.raises(StoreError):
        store.create_run(thread.id, replace(new_run(thread.id), id="../../r"))
    with pytest.raises(StoreError):
        store.append_step(thread.id, run.id, replace(new_step(thread.id, run.id), id="../s"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert store.list_messages(thread.id) == []
    assert [r.id for r in store.list_runs(thread.id)] == [run.id]
    assert store.list_steps(thread.id, run.id) == []
    assert store.list_thread_ids() == [thread.id]


def test_thread_dir_and_steps_dir_return_paths_without_checking_existence(
    store: ThreadStore, store_root: Path
) -> None:
    root = store_root.resolve()
    assert Path(store.thread_dir(MISSING_THREAD)).resolve() == root / MISSING_THREAD
    expected = root / MISSING_THREAD / "runs" / MISSING_RUN / "steps"
    assert Path(store.steps_dir(MISSING_THREAD, MISSING_RUN)).resolve() == expected
    assert not (root / MISSING_THREAD).exists()
    thread = make_thread(store)
    assert Path(store.thread_dir(thread.id)).resolve() == root / thread.id


# ------------------------------------------------------------------------ records


def test_records_round_trip_through_dicts_and_json() -> None:
    thread = new_thread({"a": "1"})
    message = new_message(thread.id, "assistant", "hello", run_id="run_" + "2" * 32)
    run = replace(
        new_run(thread.id, model="m", instructions="i", metadata={"x": "y"}),
        status=rs("failed"),
        started_at=1_700_000_000,
        failed_at=1_700_000_005,
        last_error=RunError(code="server_error", message="boom"),
        usage=RunUsage(prompt_tokens=3, completion_tokens=4),
    )
    step = replace(
        new_step(thread.id, run.id),
        status=ss("failed"),
        failed_at=1_700_000_004,
        last_error=RunError(code="server_error", message="step boom"),
    )
    for record, cls in ((thread, Thread), (message, ThreadMessage), (run, Run), (step, RunStep)):
        data = record.to_dict()
        assert cls.from_dict(data) == record
        assert cls.from_dict(json.loads(json.dumps(data))) == record


def test_records_are_written_in_v2_shapes() -> None:
    thread = new_thread()
    message = new_message(thread.id, "user", "hello there")
    run = new_run(thread.id)
    step = new_step(thread.id, run.id)
    assert thread.to_dict()["object"] == "thread"
    assert message.to_dict()["object"] == "thread.message"
    assert run.to_dict()["object"] == "thread.run"
    assert step.to_dict()["object"] == "thread.run.step"
    for record in (thread, message, run, step):
        data = record.to_dict()
        assert isinstance(data["created_at"], int)
        assert not isinstance(data["created_at"], bool)
        assert abs(data["created_at"] - now()) <= 2
        assert isinstance(data["metadata"], dict)
    assert message.to_dict()["content"] == [
        {"type": "text", "text": {"value": "hello there", "annotations": []}}
    ]
    assert message.text == "hello there"
    assert message.to_dict()["role"] == "user"
    assert run.to_dict()["status"] == "queued"
    assert step.to_dict()["type"] == "message_creation"
    assert step.to_dict()["status"] == "in_progress"
    assert step.to_dict()["step_details"]["type"] == "message_creation"


def test_new_ids_have_their_prefix_and_32_lowercase_hex() -> None:
    thread = new_thread()
    run = new_run(thread.id)
    pairs = [
        ("thread", thread.id),
        ("msg", new_message(thread.id, "user", "x").id),
        ("run", run.id),
        ("step", new_step(thread.id, run.id).id),
    ]
    for prefix, record_id in pairs:
        assert re.fullmatch(f"{prefix}_{HEX32}", record_id), record_id


def test_new_ids_are_time_ordered_and_unique() -> None:
    thread = new_thread()
    run = new_run(thread.id)
    makers = [
        lambda: new_thread().id,
        lambda: new_message(thread.id, "user", "x").id,
        lambda: new_run(thread.id).id,
        lambda: new_step(thread.id, run.id).id,
    ]
    for make in makers:
        ids = [make() for _ in range(1000)]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------------- additions


def test_list_threads_pages_newest_first_with_a_cursor(store: ThreadStore) -> None:
    created = [make_thread(store).id for _ in range(125)]
    newest_first = created[::-1]

    first = store.list_threads(limit=50)
    assert [t.id for t in first.items] == newest_first[:50]
    assert first.next_cursor is not None

    late = make_thread(store)  # created between page 1 and page 2

    second = store.list_threads(limit=50, cursor=first.next_cursor)
    assert [t.id for t in second.items] == newest_first[50:100]
    assert second.next_cursor is not None
    third = store.list_threads(limit=50, cursor=second.next_cursor)
    assert [t.id for t in third.items] == newest_first[100:]
    assert third.next_cursor is None

    walked = [t.id for page in (first, second, third) for t in page.items]
    assert len(walked) == len(set(walked)) == 125
    assert late.id not in walked
    assert [t.id for t in store.list_threads(limit=2).items] == [late.id, newest_first[0]]
    assert all(isinstance(t, Thread) for t in first.items)


def test_list_threads_walk_covers_everything_for_any_page_size(store: ThreadStore) -> None:
    created = [make_thread(store).id for _ in range(23)]
    for limit in (1, 5, 22, 23, 24):
        walked: list[str] = []
        cursor = None
        for _ in range(30):
            page = store.list_threads(limit=limit, cursor=cursor)
            assert len(page.items) <= limit
            walked.extend(t.id for t in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert cursor is None
        assert walked == created[::-1], limit


def test_latest_messages_and_messages_before_page_backwards(store: ThreadStore) -> None:
    thread = make_thread(store)
    ids = []
    for i in range(130):
        msg = new_message(thread.id, "user" if i % 2 else "assistant", f"m{i}")
        store.append_message(thread.id, msg)
        ids.append(msg.id)

    page = store.latest_messages(thread.id, limit=50)
    assert [m.id for m in page.items] == ids[80:]  # oldest -> newest within the page
    assert page.next_cursor is not None

    store.append_message(thread.id, new_message(thread.id, "user", "late"))  # mid-walk

    older = store.messages_before(thread.id, page.next_cursor, limit=50)
    assert [m.id for m in older.items] == ids[30:80]
    assert older.next_cursor is not None
    oldest = store.messages_before(thread.id, older.next_cursor, limit=50)
    assert [m.id for m in oldest.items] == ids[:30]
    assert oldest.next_cursor is None


def test_walking_messages_back_covers_all_without_duplicates(store: ThreadStore) -> None:
    thread = make_thread(store)
    ids = []
    for i in range(41):
        msg = new_message(thread.id, "user", f"m{i}")
        store.append_message(thread.id, msg)
        ids.append(msg.id)
    assert store.last_message(thread.id).id == ids[-1]
    for limit in (1, 7, 40, 41, 100):
        page = store.latest_messages(thread.id, limit=limit)
        pages = [page.items]
        for _ in range(50):
            if page.next_cursor is None:
                break
            page = store.messages_before(thread.id, page.next_cursor, limit=limit)
            assert len(page.items) <= limit
            pages.append(page.items)
        assert page.next_cursor is None
        walked = [m.id for items in reversed(pages) for m in items]
        assert walked == ids, limit


def test_list_runs_newest_first_latest_run_and_active_run(store: ThreadStore) -> None:
    thread = make_thread(store)
    assert store.list_runs(thread.id) == []
    assert store.latest_run(thread.id) is None
    assert store.active_run(thread.id) is None
    runs = []
    for status in ("completed", "failed", "cancelled"):
        run = make_run(store, thread.id, "in_progress")
        assert store.active_run(thread.id).id == run.id
        store.update_run_status(thread.id, run.id, rs(status))
        assert store.active_run(thread.id) is None
        runs.append(run.id)
    last = make_run(store, thread.id)
    runs.append(last.id)
    assert [r.id for r in store.list_runs(thread.id)] == runs[::-1]
    assert store.latest_run(thread.id).id == last.id
    assert store.active_run(thread.id) == store.get_run(thread.id, last.id)


@pytest.mark.parametrize("active", ["queued", "in_progress", "requires_action", "cancelling"])
def test_one_active_run_per_thread(store: ThreadStore, store_root: Path, active: str) -> None:
    thread = make_thread(store)
    first = make_run(store, thread.id, active)
    messages = store.list_messages(thread.id)
    with pytest.raises(ThreadBusy):
        store.create_run(thread.id, new_run(thread.id))
    with pytest.raises(ThreadBusy):
        store.append_message(thread.id, new_message(thread.id, "user", "not now"))
    assert [r.id for r in store.list_runs(thread.id)] == [first.id]
    assert store.list_messages(thread.id) == messages
    assert sorted(p.name for p in (store_root / thread.id / "runs").iterdir()) == [first.id]
    # The run's own assistant output may still be appended while it is active.
    reply = new_message(thread.id, "assistant", "working", run_id=first.id)
    store.append_message(thread.id, reply)
    assert message_ids(store, thread.id) == [reply.id]


@pytest.mark.parametrize("terminal", TERMINAL_RUN_STATUSES)
def test_a_terminal_run_frees_the_thread(store: ThreadStore, terminal: str) -> None:
    thread = make_thread(store)
    first = make_run(store, thread.id, "in_progress")
    store.update_run_status(thread.id, first.id, rs(terminal))
    store.append_message(thread.id, new_message(thread.id, "user", "again"))
    second = store.create_run(thread.id, new_run(thread.id))
    assert store.active_run(thread.id).id == second.id


def test_cancel_queued_run_is_cancelled_at_once(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id)
    before = now()
    cancelled = store.cancel_run(thread.id, run.id)
    assert sv(cancelled.status) == "cancelled"
    assert stamped(cancelled.cancelled_at, before)
    assert store.get_run(thread.id, run.id) == cancelled
    assert store.active_run(thread.id) is None
    store.create_run(thread.id, new_run(thread.id))


@pytest.mark.parametrize("running", ["in_progress", "requires_action"])
def test_cancel_run_held_by_a_live_worker_becomes_cancelling(
    store: ThreadStore, running: str
) -> None:
    thread = make_thread(store)
    run = make_held_run(store, thread.id, running)
    step = make_step(store, thread.id, run.id)
    cancelling = store.cancel_run(thread.id, run.id)
    assert sv(cancelling.status) == "cancelling"
    assert cancelling.cancelled_at is None
    assert store.get_run(thread.id, run.id) == cancelling
    assert sv(store.get_step(thread.id, run.id, step.id).status) == "in_progress"
    with pytest.raises(ThreadBusy):  # still active until its worker stops
        store.create_run(thread.id, new_run(thread.id))
    again = store.cancel_run(thread.id, run.id)  # cancelling -> unchanged
    assert sv(again.status) == "cancelling"
    assert store.get_run(thread.id, run.id) == cancelling


@pytest.mark.parametrize("running", ["in_progress", "requires_action"])
def test_cancel_run_nobody_holds_ends_cancelled(store: ThreadStore, running: str) -> None:
    """No live worker holds the run, so the cancel has to complete on its own: either at
    once, or (if the store answers `cancelling`) without any worker's help."""
    thread = make_thread(store)
    run = make_run(store, thread.id, running)
    step = make_step(store, thread.id, run.id)
    before = now()
    answer = store.cancel_run(thread.id, run.id)
    assert sv(answer.status) in ("cancelled", "cancelling")
    assert store.get_run(thread.id, run.id) == answer
    if sv(answer.status) == "cancelled":
        assert stamped(answer.cancelled_at, before)
        assert sv(store.get_step(thread.id, run.id, step.id).status) == "cancelled"
        assert store.active_run(thread.id) is None
        store.create_run(thread.id, new_run(thread.id))


@pytest.mark.parametrize("terminal", TERMINAL_RUN_STATUSES)
def test_cancel_terminal_run_changes_nothing_and_says_so(
    store: ThreadStore, store_root: Path, terminal: str
) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    make_step(store, thread.id, run.id)
    final = store.update_run_status(thread.id, run.id, rs(terminal))
    thread_dir = store_root / thread.id
    before = tree_snapshot(thread_dir)
    with pytest.raises(RunInTerminalState) as excinfo:
        store.cancel_run(thread.id, run.id)
    assert sv(excinfo.value.run.status) == terminal
    assert excinfo.value.run == final
    assert terminal in str(excinfo.value)
    after = tree_snapshot(thread_dir)
    # The store's own lock files may be touched; no record may change.
    records = {k for k in before if k.endswith((".json", ".jsonl"))}
    assert {k: after.get(k) for k in records} == {k: before[k] for k in records}
    assert {k for k in after if k.endswith((".json", ".jsonl"))} == records


def _named_message_id(step_details: dict[str, Any]) -> str | None:
    creation = step_details.get("message_creation")
    return creation.get("message_id") if isinstance(creation, dict) else None


def test_complete_run_appends_the_message_and_completes_step_and_run(store: ThreadStore) -> None:
    thread = make_thread(store)
    store.append_message(thread.id, new_message(thread.id, "user", "question"))
    run = make_run(store, thread.id, "in_progress")
    step = make_step(store, thread.id, run.id)
    reply = new_message(thread.id, "assistant", "answer", run_id=run.id)
    before = now()
    done = store.complete_run(
        thread.id, run.id, reply, RunUsage(prompt_tokens=5, completion_tokens=7)
    )
    assert sv(done.status) == "completed"
    assert stamped(done.completed_at, before)
    assert store.get_run(thread.id, run.id) == done
    assert store.get_run(thread.id, run.id).usage == RunUsage(prompt_tokens=5, completion_tokens=7)
    assistant = [m for m in store.list_messages(thread.id) if m.role == "assistant"]
    assert [(m.id, m.run_id, m.text) for m in assistant] == [(reply.id, run.id, "answer")]
    got = store.get_step(thread.id, run.id, step.id)
    assert sv(got.status) == "completed"
    assert stamped(got.completed_at, before)
    assert got.step_details["type"] == "message_creation"
    assert _named_message_id(got.step_details) == reply.id
    assert store.active_run(thread.id) is None


def test_complete_run_of_a_cancelling_run_cancels_it_without_the_message(
    store: ThreadStore,
) -> None:
    thread = make_thread(store)
    run = make_held_run(store, thread.id)
    step = make_step(store, thread.id, run.id)
    assert sv(store.cancel_run(thread.id, run.id).status) == "cancelling"
    reply = new_message(thread.id, "assistant", "too late", run_id=run.id)
    before = now()
    ended = store.complete_run(thread.id, run.id, reply)
    assert sv(ended.status) == "cancelled"
    assert stamped(ended.cancelled_at, before)
    assert ended.completed_at is None
    assert store.get_run(thread.id, run.id) == ended
    assert store.list_messages(thread.id) == []
    got = store.get_step(thread.id, run.id, step.id)
    assert sv(got.status) == "cancelled"
    assert stamped(got.cancelled_at, before)
    assert _named_message_id(got.step_details) != reply.id


@pytest.mark.parametrize("terminal", TERMINAL_RUN_STATUSES)
def test_complete_run_of_a_terminal_run_raises_and_changes_nothing(
    store: ThreadStore, store_root: Path, terminal: str
) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    make_step(store, thread.id, run.id)
    final = store.update_run_status(thread.id, run.id, rs(terminal))
    messages = store.list_messages(thread.id)
    steps = store.list_steps(thread.id, run.id)
    reply = new_message(thread.id, "assistant", "late", run_id=run.id)
    with pytest.raises(RunInTerminalState) as excinfo:
        store.complete_run(thread.id, run.id, reply)
    assert excinfo.value.run == final
    assert store.get_run(thread.id, run.id) == final
    assert store.list_messages(thread.id) == messages
    assert store.list_steps(thread.id, run.id) == steps


def test_update_thread_metadata(store: ThreadStore, store_root: Path) -> None:
    thread = make_thread(store)
    updated = store.update_thread_metadata(thread.id, {"title": "Refund", "tier": "gold"})
    assert updated.id == thread.id
    assert updated.created_at == thread.created_at
    assert updated.metadata == {"title": "Refund", "tier": "gold"}
    assert store.get_thread(thread.id) == updated
    assert read_json(store_root / thread.id / "meta.json")["metadata"] == updated.metadata
    with pytest.raises(ThreadNotFound):
        store.update_thread_metadata(MISSING_THREAD, {"a": "b"})


# ------------------------------------------------------------------------- check()


def test_check_passes_on_a_healthy_store(store: ThreadStore) -> None:
    thread = make_thread(store)
    store.append_message(thread.id, new_message(thread.id, "user", "hi"))
    run = make_run(store, thread.id, "in_progress")
    make_step(store, thread.id, run.id)
    store.complete_run(thread.id, run.id, new_message(thread.id, "assistant", "yo", run_id=run.id))
    store.list_threads()
    report = store.check()
    assert report.ok, report.problems
    assert report.problems == []


def test_check_reports_unparsable_lines(store: ThreadStore, store_root: Path) -> None:
    thread = make_thread(store)
    first = new_message(thread.id, "user", "one")
    store.append_message(thread.id, first)
    log = store_root / thread.id / "messages.jsonl"
    with log.open("ab") as f:
        f.write(b"this is not json\n")
    second = new_message(thread.id, "user", "two")
    store.append_message(thread.id, second)
    assert message_ids(store, thread.id) == [first.id, second.id]
    report = store.check()
    assert not report.ok
    assert problem_paths(store, report, "unparsable_line") == {log.resolve()}


def test_check_reports_orphan_temp_files_and_never_reads_them(
    store: ThreadStore, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id, "in_progress")
    # Learn the store's temp-file naming by watching it publish a step.
    published: list[str] = []

    def spy(real: Any) -> Any:
        def wrapper(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            dir_fd = kwargs.get("src_dir_fd")
            base = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""
            published.append(os.path.join(base, os.fsdecode(src)))
            return real(src, dst, *args, **kwargs)

        return wrapper

    for name in ("replace", "rename", "link"):
        monkeypatch.setattr(os, name, spy(getattr(os, name)))
    step = make_step(store, thread.id, run.id)
    monkeypatch.undo()
    steps_dir = (store_root / thread.id / "runs" / run.id / "steps").resolve()
    temps = [Path(p) for p in published if Path(p).parent.resolve() == steps_dir]
    if not temps:
        pytest.skip("the store did not publish the step by rename or link; temp name unknown")
    temp = temps[0]
    assert not temp.exists()
    # A crash between writing the temp file and renaming it: a complete, valid-looking
    # step sits under the temp name. It must be reported, and never read as a record.
    ghost = replace(new_step(thread.id, run.id), id="step_" + "f" * 32)
    temp.write_text(json.dumps(ghost.to_dict()))
    assert [s.id for s in store.list_steps(thread.id, run.id)] == [step.id]
    report = store.check()
    assert temp.resolve() in problem_paths(store, report, "orphan_temp_file")
    assert problem_paths(store, report, "bad_record") == set()


def test_check_reports_bad_records(store: ThreadStore, store_root: Path) -> None:
    thread = make_thread(store)
    good = make_run(store, thread.id, "in_progress")
    step = make_step(store, thread.id, good.id)
    store.update_run_status(thread.id, good.id, rs("completed"))
    bad = make_run(store, thread.id, "in_progress")
    status_file = store_root / thread.id / "runs" / bad.id / "status.json"
    status_file.write_text(json.dumps({"no": "fields"}))
    step_file = store_root / thread.id / "runs" / good.id / "steps" / f"{step.id}.json"
    step_file.write_text('{"id": "' + step.id + '", "obj')
    report = store.check()
    assert not report.ok
    assert {status_file.resolve(), step_file.resolve()} <= problem_paths(
        store, report, "bad_record"
    )


def test_damaged_records_raise_store_errors_or_are_skipped(
    store: ThreadStore, store_root: Path
) -> None:
    """Damage never escapes as a foreign exception (KeyError, ValueError...)."""
    thread = make_thread(store)
    good = make_run(store, thread.id, "in_progress")
    step = make_step(store, thread.id, good.id)
    store.update_run_status(thread.id, good.id, rs("completed"))
    bad = make_run(store, thread.id, "in_progress")
    runs = store_root / thread.id / "runs"
    (runs / bad.id / "status.json").write_text(json.dumps({"no": "fields"}))
    (runs / good.id / "steps" / f"{step.id}.json").write_text(json.dumps(["not", "a", "step"]))

    def read_or_store_error(call: Any) -> Any:
        try:
            return call()
        except StoreError as error:
            assert not isinstance(error, (RunNotFound, RunStepNotFound, ThreadNotFound)), error
            return error

    assert isinstance(read_or_store_error(lambda: store.get_run(thread.id, bad.id)), StoreError)
    got = read_or_store_error(lambda: store.get_step(thread.id, good.id, step.id))
    assert isinstance(got, StoreError)
    runs_listed = read_or_store_error(lambda: store.list_runs(thread.id))
    if isinstance(runs_listed, list):
        assert [r.id for r in runs_listed] == [good.id]
    steps_listed = read_or_store_error(lambda: store.list_steps(thread.id, good.id))
    if isinstance(steps_listed, list):
        assert steps_listed == []
    with pytest.raises(StoreError):
        store.update_run_status(thread.id, bad.id, rs("failed"))
    with pytest.raises(StoreError):
        store.cancel_run(thread.id, bad.id)
