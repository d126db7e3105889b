"""No request-supplied value names a file outside the root, symlinks included: unsafe IDs
are simply not found, and a symlink inside the root is treated as not there."""

from __future__ import annotations

import builtins
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stores_testkit import (
    assert_not_found,
    make_run,
    make_step,
    make_thread,
    rs,
    ss,
    tree_snapshot,
)

from stores import (
    RunNotFound,
    RunStepNotFound,
    StoreError,
    Thread,
    ThreadNotFound,
    ThreadStore,
    is_safe_id,
    new_message,
    new_run,
    new_step,
    new_thread,
)

_readlink = os.readlink  # the real one: the audit below wraps os.readlink
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
HEX = "0123456789abcdef" * 2


def unsafe_ids(outside: Path, target: str) -> list[str]:
    """IDs that are not one safe path component; some aim at a real thread outside."""
    return [
        "..",
        ".",
        "../x",
        f"../outside/{target}",
        f"../../{outside.parent.name}/outside/{target}",
        str(outside / target),
        "/etc/passwd",
        "a/b",
        "x\n",
        "x\x00y",
        "a" * 300,
        "a" * 129,
        "",
        " ",
        "_leading_underscore",
        "-leading-dash",
        "thre\u0430d_" + HEX,  # Cyrillic 'а'
        "\uff54\uff48\uff52\uff45\uff41\uff44_" + HEX,  # fullwidth 'thread'
        "thread_" + HEX + "\u0301",  # a combining accent
        "thread_" + HEX + ".",
        "thread." + HEX,
        "thread_" + HEX + "\t",
    ]


def look_alikes(real: str) -> list[str]:
    """Near misses of a real ID that a sloppy check (strip, normalise, $) would accept."""
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in real)
    variants = [
        real + "\n",
        real + " ",
        " " + real,
        real + "/",
        real + "/.",
        "./" + real,
        real + "\x00",
        homoglyph(real),
        fullwidth,
        real.upper() if real != real.upper() else real.lower(),
    ]
    assert real not in variants
    return variants


def homoglyph(real: str) -> str:
    """`real` with one Latin letter swapped for the Cyrillic letter that looks the same."""
    for latin, cyrillic in (("a", "\u0430"), ("e", "\u0435"), ("c", "\u0441"), ("p", "\u0440")):
        if latin in real:
            return real.replace(latin, cyrillic, 1)
    return real + "\u0430"


# ------------------------------------------------------------------- is_safe_id


@pytest.mark.parametrize(
    "value",
    ["a", "Z", "7", "thread_" + HEX, "step-" + HEX, "A1_-b", "a" * 128, "0-0_0"],
)
def test_is_safe_id_accepts_single_safe_components(value: str) -> None:
    assert is_safe_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "a\\b",
        "/etc/passwd",
        "x\n",
        "\n",
        "x\x00y",
        "a" * 129,
        "a" * 300,
        "_a",
        "-a",
        "a b",
        "a.b",
        "a:b",
        "\u0430",
        "\uff41",
        "é",
        "a\u0301",
        "a\t",
        " a",
    ],
)
def test_is_safe_id_rejects_everything_else(value: str) -> None:
    assert not is_safe_id(value)


@given(st.text(alphabet=st.sampled_from("aZ09_-./\\\n\x00 é\u0430\uff41"), max_size=140))
def test_is_safe_id_is_exactly_the_contract_rule(value: str) -> None:
    assert is_safe_id(value) == (SAFE_ID.fullmatch(value) is not None)


@given(st.text(max_size=20))
def test_is_safe_id_on_arbitrary_text(value: str) -> None:
    assert is_safe_id(value) == (SAFE_ID.fullmatch(value) is not None)


# ------------------------------------------------------------------ file access


class Audit:
    """Records every path the process asks the OS about while active."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def note(self, path: Any, dir_fd: int | None = None) -> None:
        if isinstance(path, int):
            return
        try:
            name = os.fsdecode(path)
        except TypeError:
            return
        if dir_fd is not None and not os.path.isabs(name):
            name = os.path.join(_readlink(f"/proc/self/fd/{dir_fd}"), name)
        self.paths.append(os.path.normpath(os.path.abspath(name)))

    def outside(self, root: Path) -> list[str]:
        top = str(root)
        return [p for p in self.paths if p != top and not p.startswith(top + os.sep)]


@contextmanager
def audited() -> Iterator[Audit]:
    audit = Audit()
    saved: dict[tuple[Any, str], Any] = {}

    def wrap(owner: Any, name: str, dir_fd_kw: bool = True) -> None:
        real = getattr(owner, name)
        saved[(owner, name)] = real

        def wrapper(path: Any = None, *args: Any, **kwargs: Any) -> Any:
            if path is not None:
                dir_fd = kwargs.get("dir_fd", kwargs.get("src_dir_fd")) if dir_fd_kw else None
                audit.note(path, dir_fd)
            if name in ("rename", "replace", "link") and args:
                audit.note(args[0], kwargs.get("dst_dir_fd"))
            return real(path, *args, **kwargs) if path is not None else real(*args, **kwargs)

        setattr(owner, name, wrapper)

    for name in ("open", "stat", "lstat", "listdir", "scandir", "mkdir", "rename", "replace",
                 "link", "unlink", "rmdir", "readlink", "access"):  # fmt: skip
        wrap(os, name)
    wrap(builtins, "open", dir_fd_kw=False)
    wrap(io, "open", dir_fd_kw=False)
    try:
        yield audit
    finally:
        for (owner, name), real in saved.items():
            setattr(owner, name, real)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    """A store, one real thread/run/step in it, and outside the root a sentinel thread
    with valid-looking records that nothing may ever read or change."""
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    store = ThreadStore(root)
    thread = make_thread(store)
    store.append_message(thread.id, new_message(thread.id, "user", "hello"))
    store.append_message(thread.id, new_message(thread.id, "assistant", "hi"))
    run = make_run(store, thread.id, "in_progress")
    step = make_step(store, thread.id, run.id)

    target = new_thread({"sentinel": "outside"})
    outside_thread = outside / target.id
    (outside_thread / "runs" / run.id / "steps").mkdir(parents=True)
    (outside_thread / "meta.json").write_text(json.dumps(target.to_dict()))
    sentinel_msg = new_message(target.id, "user", "sentinel")
    (outside_thread / "messages.jsonl").write_text(json.dumps(sentinel_msg.to_dict()) + "\n")
    sentinel_run = replace(new_run(target.id), id=run.id)
    (outside_thread / "runs" / run.id / "status.json").write_text(
        json.dumps(sentinel_run.to_dict())
    )
    sentinel_step = replace(new_step(target.id, run.id), id=step.id)
    (outside_thread / "runs" / run.id / "steps" / f"{step.id}.json").write_text(
        json.dumps(sentinel_step.to_dict())
    )
    return {
        "store": store,
        "root": root.resolve(),
        "outside": outside,
        "target": target.id,
        "thread": thread.id,
        "run": run.id,
        "step": step.id,
        "cursor": store.latest_messages(thread.id, limit=1).next_cursor,
        "snapshot": tree_snapshot(outside),
        "sentinel_ids": {target.id, sentinel_msg.id},
    }


def operations(
    store: ThreadStore, t: str, r: str, s: str, cursor: str | None
) -> list[tuple[str, Callable[[], Any]]]:
    """Every operation that takes an ID, with the IDs given."""
    return [
        ("get_thread", lambda: store.get_thread(t)),
        ("thread_dir", lambda: store.thread_dir(t)),
        ("append_message", lambda: store.append_message(t, replace(
            new_message("thread_" + HEX, "user", "x"), thread_id=t))),
        ("append_message/assistant", lambda: store.append_message(t, replace(
            new_message("thread_" + HEX, "assistant", "x", run_id=r), thread_id=t))),
        ("list_messages", lambda: store.list_messages(t)),
        ("latest_messages", lambda: store.latest_messages(t)),
        ("messages_before", lambda: store.messages_before(t, cursor)),
        ("last_message", lambda: store.last_message(t)),
        ("update_thread_metadata", lambda: store.update_thread_metadata(t, {"k": "v"})),
        ("create_run", lambda: store.create_run(t, replace(
            new_run("thread_" + HEX), thread_id=t))),
        ("get_run", lambda: store.get_run(t, r)),
        ("list_runs", lambda: store.list_runs(t)),
        ("latest_run", lambda: store.latest_run(t)),
        ("active_run", lambda: store.active_run(t)),
        ("update_run_status", lambda: store.update_run_status(t, r, rs("failed"))),
        ("force_update_run_status", lambda: store.force_update_run_status(t, r, rs("failed"))),
        ("cancel_run", lambda: store.cancel_run(t, r)),
        ("complete_run", lambda: store.complete_run(t, r, None)),
        ("steps_dir", lambda: store.steps_dir(t, r)),
        ("append_step", lambda: store.append_step(t, r, replace(
            new_step("thread_" + HEX, "run_" + HEX), thread_id=t, run_id=r))),
        ("list_steps", lambda: store.list_steps(t, r)),
        ("get_step", lambda: store.get_step(t, r, s)),
        ("update_step_status", lambda: store.update_step_status(t, r, s, ss("completed"))),
    ]  # fmt: skip


PATH_ONLY = {"thread_dir", "steps_dir"}  # answer any safe ID with a path, by contract
RUN_LEVEL = {
    "get_run", "update_run_status", "force_update_run_status", "cancel_run", "complete_run",
    "steps_dir", "append_step", "list_steps", "get_step", "update_step_status",
}  # fmt: skip
STEP_LEVEL = {"get_step", "update_step_status"}


def assert_untouched(world: dict[str, Any], audit: Audit) -> None:
    assert tree_snapshot(world["outside"]) == world["snapshot"], "the outside tree changed"
    assert audit.outside(world["root"]) == [], "the store looked outside its root"


def call_expecting(expected: type[Exception], call: Callable[[], Any], label: str) -> None:
    try:
        result = call()
    except StoreError as error:
        assert_not_found(error, expected)
    except Exception as error:  # a foreign exception is a failure too
        pytest.fail(f"{label}: {error!r} instead of {expected.__name__}")
    else:
        pytest.fail(f"{label}: returned {result!r} instead of raising {expected.__name__}")


def test_unsafe_thread_ids_are_not_found_everywhere(world: dict[str, Any]) -> None:
    store, r, s = world["store"], world["run"], world["step"]
    with audited() as audit:
        for bad in unsafe_ids(world["outside"], world["target"]):
            for name, call in operations(store, bad, r, s, world["cursor"]):
                call_expecting(ThreadNotFound, call, f"{name}({bad!r})")
    assert_untouched(world, audit)


def test_unsafe_run_ids_are_not_found_everywhere(world: dict[str, Any]) -> None:
    store, t, s = world["store"], world["thread"], world["step"]
    run_target = f"../../../outside/{world['target']}/runs/{world['run']}"
    with audited() as audit:
        for bad in [*unsafe_ids(world["outside"], world["target"]), run_target]:
            for name, call in operations(store, t, bad, s, world["cursor"]):
                if name in RUN_LEVEL:
                    call_expecting(RunNotFound, call, f"{name}(run={bad!r})")
    assert_untouched(world, audit)


def test_unsafe_step_ids_are_not_found_everywhere(world: dict[str, Any]) -> None:
    store, t, r = world["store"], world["thread"], world["run"]
    with audited() as audit:
        for bad in unsafe_ids(world["outside"], world["target"]):
            for name, call in operations(store, t, r, bad, world["cursor"]):
                if name in STEP_LEVEL:
                    call_expecting(RunStepNotFound, call, f"{name}(step={bad!r})")
    assert_untouched(world, audit)


def test_look_alikes_of_real_ids_are_not_found(world: dict[str, Any]) -> None:
    store, t, r, s = world["store"], world["thread"], world["run"], world["step"]
    with audited() as audit:
        for bad in look_alikes(t):
            for name, call in operations(store, bad, r, s, world["cursor"]):
                if not (name in PATH_ONLY and is_safe_id(bad)):
                    call_expecting(ThreadNotFound, call, f"{name}({bad!r})")
        for bad in look_alikes(r):
            for name, call in operations(store, t, bad, s, world["cursor"]):
                if name in RUN_LEVEL and not (name in PATH_ONLY and is_safe_id(bad)):
                    call_expecting(RunNotFound, call, f"{name}(run={bad!r})")
        for bad in look_alikes(s):
            for name, call in operations(store, t, r, bad, world["cursor"]):
                if name in STEP_LEVEL:
                    call_expecting(RunStepNotFound, call, f"{name}(step={bad!r})")
    assert_untouched(world, audit)
    # The real records were not touched by any of that.
    assert len(store.list_messages(t)) == 2
    assert store.get_run(t, r).status.value == "in_progress"


def test_creating_records_with_unsafe_ids_touches_nothing(world: dict[str, Any]) -> None:
    store, t, r = world["store"], world["thread"], world["run"]
    with audited() as audit:
        for bad in unsafe_ids(world["outside"], world["target"]):
            calls = [
                lambda bad=bad: store.create_thread(Thread(id=bad, created_at=0, metadata={})),
                lambda bad=bad: store.append_message(
                    t, replace(new_message(t, "assistant", "x"), id=bad)
                ),
                lambda bad=bad: store.append_step(t, r, replace(new_step(t, r), id=bad)),
            ]
            for call in calls:
                with pytest.raises(StoreError):
                    call()
    assert_untouched(world, audit)
    assert store.list_thread_ids() == [t]


def test_cursors_cannot_name_files(world: dict[str, Any]) -> None:
    """Page cursors come from requests too: a hostile one is refused or harmless."""
    store, t = world["store"], world["thread"]
    hostile = [
        "../outside",
        f"../outside/{world['target']}",
        str(world["outside"] / world["target"] / "meta.json"),
        "-1",
        "99999999999999999999999999",
        "1e9",
        "\x00",
        "0\n",
    ]
    with audited() as audit:
        for cursor in hostile:
            for call in (
                lambda c=cursor: store.list_threads(cursor=c),
                lambda c=cursor: store.messages_before(t, c),
            ):
                try:
                    page = call()
                except StoreError:
                    continue
                for item in page.items:
                    assert item.id not in world["sentinel_ids"], cursor
    assert_untouched(world, audit)


# ------------------------------------------------------------ symlinks in the root


def test_a_symlinked_thread_dir_is_not_there(world: dict[str, Any]) -> None:
    store, root, r, s = world["store"], world["root"], world["run"], world["step"]
    link = "thread_" + "5" * 32
    (root / link).symlink_to(world["outside"] / world["target"], target_is_directory=True)
    with audited() as audit:
        assert link not in store.list_thread_ids()
        for name, call in operations(store, link, r, s, world["cursor"]):
            if name in PATH_ONLY:
                continue  # a path for a safe ID, by contract; never opened
            call_expecting(ThreadNotFound, call, f"{name}(symlinked thread)")
        assert all(t.id != world["target"] for t in store.list_threads().items)
        with suppress(StoreError):
            store.create_thread(Thread(id=link, created_at=0, metadata={}))
    assert_untouched(world, audit)


def test_a_symlinked_meta_json_is_not_there(world: dict[str, Any]) -> None:
    store, root, t = world["store"], world["root"], world["thread"]
    meta = root / t / "meta.json"
    meta.unlink()
    meta.symlink_to(world["outside"] / world["target"] / "meta.json")
    with audited() as audit:
        with pytest.raises(ThreadNotFound):
            store.get_thread(t)
        assert t not in store.list_thread_ids()
        with pytest.raises(ThreadNotFound):
            store.update_thread_metadata(t, {"changed": "yes"})
        with pytest.raises(ThreadNotFound):
            store.append_message(t, new_message(t, "assistant", "x"))
    assert_untouched(world, audit)


def test_a_symlinked_messages_log_is_not_there(world: dict[str, Any]) -> None:
    store, root, t = world["store"], world["root"], world["thread"]
    log = root / t / "messages.jsonl"
    log.unlink()
    log.symlink_to(world["outside"] / world["target"] / "messages.jsonl")
    with audited() as audit:
        assert store.list_messages(t) == []
        assert store.latest_messages(t).items == []
        assert store.last_message(t) is None
        with suppress(StoreError):
            store.append_message(t, new_message(t, "assistant", "must not reach outside"))
    assert_untouched(world, audit)


def test_a_symlinked_runs_dir_is_not_there(world: dict[str, Any]) -> None:
    store, root, t, r, s = (world[k] for k in ("store", "root", "thread", "run", "step"))
    runs = root / t / "runs"
    moved = root.parent / "moved-runs"
    runs.rename(moved)
    runs.symlink_to(world["outside"] / world["target"] / "runs", target_is_directory=True)
    with audited() as audit:
        assert store.list_runs(t) == []
        assert store.latest_run(t) is None
        assert store.active_run(t) is None
        for name, call in operations(store, t, r, s, world["cursor"]):
            if name in RUN_LEVEL - PATH_ONLY:
                call_expecting(RunNotFound, call, f"{name}(symlinked runs dir)")
        with suppress(StoreError):
            store.create_run(t, new_run(t))
    assert_untouched(world, audit)


def test_a_symlinked_run_dir_status_or_step_is_not_there(world: dict[str, Any]) -> None:
    store, root, t, r, s = (world[k] for k in ("store", "root", "thread", "run", "step"))
    outside_run = world["outside"] / world["target"] / "runs" / r
    run_dir = root / t / "runs" / r
    # A step file that is a symlink.
    step_file = run_dir / "steps" / f"{s}.json"
    step_file.unlink()
    step_file.symlink_to(outside_run / "steps" / f"{s}.json")
    with audited() as audit:
        call_expecting(RunStepNotFound, lambda: store.get_step(t, r, s), "get_step")
        call_expecting(
            RunStepNotFound,
            lambda: store.update_step_status(t, r, s, ss("failed")),
            "update_step_status",
        )
        assert store.list_steps(t, r) == []
    # A steps dir that is a symlink.
    step_file.unlink()
    (run_dir / "steps").rmdir()
    (run_dir / "steps").symlink_to(outside_run / "steps", target_is_directory=True)
    with audited() as audit2:
        call_expecting(RunStepNotFound, lambda: store.get_step(t, r, s), "get_step")
        assert store.list_steps(t, r) == []
        with suppress(StoreError):
            store.append_step(t, r, new_step(t, r))
    # A status.json that is a symlink.
    status = run_dir / "status.json"
    status.unlink()
    status.symlink_to(outside_run / "status.json")
    with audited() as audit3:
        for name, call in operations(store, t, r, s, world["cursor"]):
            if name in RUN_LEVEL - PATH_ONLY:
                call_expecting(RunNotFound, call, f"{name}(symlinked status.json)")
        assert store.list_runs(t) == []
    # A run dir that is a symlink.
    (run_dir / "steps").unlink()
    status.unlink()
    for leftover in run_dir.iterdir():
        leftover.unlink()
    run_dir.rmdir()
    run_dir.symlink_to(outside_run, target_is_directory=True)
    with audited() as audit4:
        for name, call in operations(store, t, r, s, world["cursor"]):
            if name in RUN_LEVEL - PATH_ONLY:
                call_expecting(RunNotFound, call, f"{name}(symlinked run dir)")
        assert store.list_runs(t) == []
    for each in (audit, audit2, audit3, audit4):
        assert_untouched(world, each)


def test_a_dangerous_root_level_name_cannot_be_reached(tmp_path: Path) -> None:
    """Directories inside the root whose names are not safe IDs hold no threads, even
    when they contain valid records (too long, look-alike, leading underscore)."""
    root = tmp_path / "store"
    store = ThreadStore(root)
    planted = ["a" * 129, "thre\u0430d_" + HEX, "_" + HEX, "thread_" + HEX + " "]
    for name in planted:
        (root / name).mkdir()
        (root / name / "meta.json").write_text(
            json.dumps(Thread(id=name, created_at=0, metadata={}).to_dict())
        )
    for name in planted:
        with pytest.raises(ThreadNotFound):
            store.get_thread(name)
    assert store.list_thread_ids() == []
    assert store.list_threads().items == []


def test_the_root_itself_may_be_reached_through_a_symlink(tmp_path: Path) -> None:
    """Only symlinks *inside* the root are refused; an operator may point at the store
    through one (a deploy symlink), and it must keep working."""
    real = tmp_path / "real-store"
    ThreadStore(real)
    link = tmp_path / "current"
    link.symlink_to(real, target_is_directory=True)
    store = ThreadStore(link)
    thread = make_thread(store)
    assert store.get_thread(thread.id) == thread
    assert ThreadStore(real).get_thread(thread.id) == thread


def test_new_thread_ids_are_safe() -> None:
    assert all(is_safe_id(new_thread().id) for _ in range(100))
