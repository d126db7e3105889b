"""A real I/O failure is a StoreIOError, never "not found", and it leaves what was
already stored intact and readable."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from stores_testkit import NOT_FOUND, make_run, make_step, make_thread, rs, ss

from stores import (
    RunError,
    StoreIOError,
    ThreadStore,
    new_message,
    new_run,
    new_step,
    new_thread,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
NOBODY = 65534


def expect_io_error(call: Callable[[], Any], label: str) -> StoreIOError:
    try:
        result = call()
    except StoreIOError as error:
        assert not isinstance(error, NOT_FOUND), f"{label}: {error!r} is also a not-found"
        return error
    except Exception as error:
        pytest.fail(f"{label}: {type(error).__name__}: {error} instead of StoreIOError")
    pytest.fail(f"{label}: returned {result!r} instead of raising StoreIOError")


@pytest.fixture
def populated(store: ThreadStore) -> dict[str, Any]:
    thread = make_thread(store, {"k": "v"})
    store.append_message(thread.id, new_message(thread.id, "user", "question"))
    run = make_run(store, thread.id, "in_progress")
    step = make_step(store, thread.id, run.id)
    return {"store": store, "t": thread.id, "r": run.id, "s": step.id}


def replace_with_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")


# ----------------------------------------------- a directory where a file belongs


def test_meta_json_replaced_by_a_directory(populated: dict[str, Any], store_root: Path) -> None:
    store, t = populated["store"], populated["t"]
    replace_with_directory(store_root / t / "meta.json")
    expect_io_error(lambda: store.get_thread(t), "get_thread")
    expect_io_error(lambda: store.update_thread_metadata(t, {"a": "b"}), "update_thread_metadata")
    expect_io_error(
        lambda: store.append_message(t, new_message(t, "assistant", "x")), "append_message"
    )


def test_status_json_replaced_by_a_directory(populated: dict[str, Any], store_root: Path) -> None:
    store, t, r, s = (populated[k] for k in ("store", "t", "r", "s"))
    replace_with_directory(store_root / t / "runs" / r / "status.json")
    expect_io_error(lambda: store.get_run(t, r), "get_run")
    expect_io_error(lambda: store.update_run_status(t, r, rs("failed")), "update_run_status")
    expect_io_error(lambda: store.cancel_run(t, r), "cancel_run")
    expect_io_error(lambda: store.complete_run(t, r, None), "complete_run")
    expect_io_error(lambda: store.list_steps(t, r), "list_steps")
    expect_io_error(lambda: store.get_step(t, r, s), "get_step")


def test_messages_log_replaced_by_a_directory(populated: dict[str, Any], store_root: Path) -> None:
    store, t = populated["store"], populated["t"]
    replace_with_directory(store_root / t / "messages.jsonl")
    expect_io_error(lambda: store.list_messages(t), "list_messages")
    expect_io_error(lambda: store.latest_messages(t), "latest_messages")
    expect_io_error(lambda: store.last_message(t), "last_message")
    expect_io_error(
        lambda: store.append_message(t, new_message(t, "assistant", "x")), "append_message"
    )


def test_step_file_replaced_by_a_directory(populated: dict[str, Any], store_root: Path) -> None:
    store, t, r, s = (populated[k] for k in ("store", "t", "r", "s"))
    replace_with_directory(store_root / t / "runs" / r / "steps" / f"{s}.json")
    expect_io_error(lambda: store.get_step(t, r, s), "get_step")
    expect_io_error(
        lambda: store.update_step_status(t, r, s, ss("completed")), "update_step_status"
    )


# ------------------------------------------------------------ unreadable files

PERMISSION_CASES = [
    "meta.json/get_thread",
    "meta.json/update_thread_metadata",
    "messages.jsonl/list_messages",
    "messages.jsonl/latest_messages",
    "messages.jsonl/append_message",
    "status.json/get_run",
    "status.json/update_run_status",
    "status.json/cancel_run",
    "step file/get_step",
    "thread dir/get_thread",
    "thread dir/list_messages",
    "runs dir/get_run",
    "runs dir/list_runs",
    "steps dir/list_steps",
    "steps dir/get_step",
]


@pytest.fixture(scope="module")
def permission_results() -> Iterator[dict[str, Any]]:
    """Run every chmod-000 case once, in a subprocess that is not root."""
    workdir = Path(tempfile.mkdtemp(prefix="threadsite-perm-"))
    try:
        if os.geteuid() == 0:
            workdir.chmod(0o755)
            os.chown(workdir, NOBODY, NOBODY)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        result = subprocess.run(
            [sys.executable, str(HERE / "unprivileged_io.py"), str(workdir)],
            capture_output=True,
            env=env,
            cwd=workdir,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        yield json.loads(result.stdout.decode().strip().splitlines()[-1])
    finally:
        for path in workdir.rglob("*"):  # give everything back its permissions
            if not path.is_symlink():
                path.chmod(0o700)
        shutil.rmtree(workdir)


@pytest.mark.parametrize("case", PERMISSION_CASES)
def test_unreadable_files_raise_store_io_error(
    permission_results: dict[str, Any], case: str
) -> None:
    if "skip" in permission_results:
        pytest.skip(permission_results["skip"])
    outcome = permission_results["results"][case]
    assert outcome["error"] == "StoreIOError" or "StoreIOError" in outcome["mro"], outcome
    assert not set(outcome["mro"]) & {"ThreadNotFound", "RunNotFound", "RunStepNotFound"}
    assert outcome["errno"] == errno.EACCES, outcome


# --------------------------------------------------------------- injected faults


class Fault:
    def __init__(self, functions: tuple[str, ...], code: int) -> None:
        self.functions = functions
        self.code = code
        self.hits = 0

    @contextmanager
    def active(self) -> Iterator[None]:
        saved = {name: getattr(os, name) for name in self.functions}

        def failing(*args: Any, **kwargs: Any) -> Any:
            self.hits += 1
            raise OSError(self.code, os.strerror(self.code))

        try:
            for name in self.functions:
                setattr(os, name, failing)
            yield
        finally:
            for name, real in saved.items():
                setattr(os, name, real)


FAULTS = {
    "fsync-ENOSPC": (("fsync",), errno.ENOSPC),
    "fsync-EIO": (("fsync",), errno.EIO),
    "write-ENOSPC": (("write",), errno.ENOSPC),
    "publish-EIO": (("rename", "replace", "link"), errno.EIO),
}


def view(store: ThreadStore) -> dict[tuple[str, ...], Any]:
    """Everything readable in the store, record by record."""
    seen: dict[tuple[str, ...], Any] = {}
    for thread_id in store.list_thread_ids():
        seen[("thread", thread_id)] = store.get_thread(thread_id).to_dict()
        seen[("messages", thread_id)] = [m.to_dict() for m in store.list_messages(thread_id)]
        for run in store.list_runs(thread_id):
            seen[("run", thread_id, run.id)] = run.to_dict()
            seen[("steps", thread_id, run.id)] = [
                s.to_dict() for s in store.list_steps(thread_id, run.id)
            ]
    return seen


@pytest.fixture
def scene(store: ThreadStore) -> dict[str, Any]:
    """t1: a running run r1 with an open step; t2: no run; t3: a queued run r3."""
    t1 = make_thread(store, {"n": "1"})
    store.append_message(t1.id, new_message(t1.id, "user", "q1"))
    r1 = make_run(store, t1.id, "in_progress")
    s1 = make_step(store, t1.id, r1.id)
    t2 = make_thread(store, {"n": "2"})
    store.append_message(t2.id, new_message(t2.id, "user", "q2"))
    t3 = make_thread(store, {"n": "3"})
    r3 = make_run(store, t3.id)
    return {"store": store, "t1": t1.id, "r1": r1.id, "s1": s1.id, "t2": t2.id, "t3": t3.id,
            "r3": r3.id}  # fmt: skip


def operation(name: str, sc: dict[str, Any]) -> tuple[Callable[[], Any], set[tuple[str, ...]]]:
    """The call, and the records it is allowed to have changed if it failed part-way."""
    store = sc["store"]
    t1, r1, s1, t2, t3, r3 = (sc[k] for k in ("t1", "r1", "s1", "t2", "t3", "r3"))
    reply = new_message(t1, "assistant", "answer", run_id=r1)
    table: dict[str, tuple[Callable[[], Any], set[tuple[str, ...]]]] = {
        "create_thread": (lambda: store.create_thread(new_thread()), set()),
        "append_message": (
            lambda: store.append_message(t2, new_message(t2, "user", "more")),
            {("messages", t2)},
        ),
        "update_thread_metadata": (
            lambda: store.update_thread_metadata(t2, {"n": "changed"}),
            {("thread", t2)},
        ),
        "create_run": (lambda: store.create_run(t2, new_run(t2)), set()),
        "update_run_status": (
            lambda: store.update_run_status(
                t1, r1, rs("failed"), RunError(code="server_error", message="x")
            ),
            {("run", t1, r1)},
        ),
        "cancel_run": (lambda: store.cancel_run(t3, r3), {("run", t3, r3), ("steps", t3, r3)}),
        "complete_run": (
            lambda: store.complete_run(t1, r1, reply),
            {("run", t1, r1), ("steps", t1, r1), ("messages", t1)},
        ),
        "append_step": (lambda: store.append_step(t1, r1, new_step(t1, r1)), set()),
        "update_step_status": (
            lambda: store.update_step_status(t1, r1, s1, ss("completed")),
            {("steps", t1, r1)},
        ),
    }
    return table[name]


OPERATIONS = [
    "create_thread",
    "append_message",
    "update_thread_metadata",
    "create_run",
    "update_run_status",
    "cancel_run",
    "complete_run",
    "append_step",
    "update_step_status",
]


@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("op", OPERATIONS)
def test_an_injected_disk_failure_raises_and_keeps_stored_data(
    scene: dict[str, Any], op: str, fault_name: str
) -> None:
    store = scene["store"]
    before = view(store)
    call, may_change = operation(op, scene)
    functions, code = FAULTS[fault_name]
    fault = Fault(functions, code)
    outcome: BaseException | None = None
    with fault.active():
        try:
            call()
        except BaseException as error:  # judged below, outside the fault
            outcome = error
    if fault.hits == 0:
        # The operation never makes that call (append_message renames nothing): armed
        # or not, it must simply succeed.
        assert outcome is None, f"{op} failed although os.{'/'.join(functions)} was unused"
        return
    assert isinstance(outcome, StoreIOError), f"{op} under {fault_name}: {outcome!r}"
    assert not isinstance(outcome, NOT_FOUND)
    assert outcome.errno == code

    # What was stored before is intact and readable; only the records this operation
    # works on may differ, and a log may only have grown by the one line.
    after = view(ThreadStore(store.root))
    for key, value in before.items():
        assert key in after, f"{key} vanished"
        if key in may_change and key[0] == "messages":
            assert after[key][: len(value)] == value
            assert len(after[key]) <= len(value) + 1
        elif key not in may_change:
            assert after[key] == value, key
    problems = {p.kind for p in store.check().problems}
    assert not problems & {"bad_record", "unparsable_line"}, store.check().problems

    # And the store still works: no lock left held, nothing wedged.
    later = new_message(scene["t2"], "assistant", "after the failure")
    store.append_message(scene["t2"], later)
    assert store.last_message(scene["t2"]).id == later.id
    store.update_thread_metadata(scene["t3"], {"still": "writable"})


@pytest.mark.parametrize("fault_name", ["publish-EIO", "fsync-EIO"])
def test_a_failed_completion_never_leaves_a_reply_on_a_cancelled_run(
    scene: dict[str, Any], fault_name: str
) -> None:
    """complete_run is one step: if it fails part-way and the run is then cancelled,
    the cancelled run must not carry the assistant reply of the failed completion."""
    store, t1, r1 = scene["store"], scene["t1"], scene["r1"]
    functions, code = FAULTS[fault_name]
    fault = Fault(functions, code)
    reply = new_message(t1, "assistant", "half-finished", run_id=r1)
    with fault.active(), pytest.raises(StoreIOError):
        store.complete_run(t1, r1, reply)
    assert fault.hits > 0
    try:
        store.cancel_run(t1, r1)
    except StoreIOError:
        pytest.fail("cancel_run failed after the disk recovered")
    except Exception:  # RunInTerminalState: the completion did land; judged below
        pass
    final = store.get_run(t1, r1)
    replies = [m.id for m in store.list_messages(t1) if m.run_id == r1]
    if final.status.value == "cancelled":
        assert replies == [], "a cancelled run carries the reply of a failed completion"
    else:
        assert final.status.value == "completed"
        assert replies == [reply.id]
