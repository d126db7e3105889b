"""Permission failures for test_io_errors, run as an unprivileged user: root reads
chmod-000 files regardless, so when started as root this drops to uid/gid 65534 first
(after importing everything it needs, since the interpreter's own files may then be out
of reach). Builds a store under ROOT, makes one file or directory unreadable per case,
and prints a JSON object: case -> {"error": class name or None, "errno": ...}.

Usage: python unprivileged_io.py ROOT
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

NOBODY = 65534
STDLIB_PRELOAD = (
    "contextlib", "dataclasses", "enum", "errno", "fcntl", "hashlib", "io", "random",
    "secrets", "shutil", "stat", "tempfile", "threading", "time", "traceback", "uuid",
)  # fmt: skip


def preload() -> None:
    import stores

    for module in pkgutil.walk_packages(stores.__path__, "stores."):
        importlib.import_module(module.name)
    for name in STDLIB_PRELOAD:
        importlib.import_module(name)


def drop_privileges() -> str | None:
    """None on success (or when not root), else why it could not be done."""
    if os.geteuid() != 0:
        return None
    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    except OSError as error:
        return f"cannot drop root privileges to uid {NOBODY}: {error}"
    if os.geteuid() == 0:
        return "still root after setuid"
    return None


def main() -> None:
    root = Path(sys.argv[1])
    preload()
    problem = drop_privileges()
    if problem is not None:
        print(json.dumps({"skip": problem}))
        return
    probe = root / ".probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        probe.read_text()
    except PermissionError:
        pass
    else:
        print(json.dumps({"skip": "chmod 000 does not deny reading here (capabilities?)"}))
        return
    finally:
        probe.chmod(0o600)
        probe.unlink()

    from stores import (
        RunStatus,
        ThreadStore,
        new_message,
        new_run,
        new_step,
        new_thread,
    )

    store = ThreadStore(root / "store")

    def fresh() -> tuple[str, str, str, Path]:
        thread = store.create_thread(new_thread())
        store.append_message(thread.id, new_message(thread.id, "user", "hello"))
        run = store.create_run(thread.id, new_run(thread.id))
        store.update_run_status(thread.id, run.id, RunStatus("in_progress"))
        step = store.append_step(thread.id, run.id, new_step(thread.id, run.id))
        return thread.id, run.id, step.id, store.root / thread.id

    results: dict[str, Any] = {}

    def case(name: str, target: Callable[[Path, str, str, str], Path], call: Any) -> None:
        t, r, s, thread_dir = fresh()
        path = target(thread_dir, t, r, s)
        mode = path.stat().st_mode & 0o7777
        path.chmod(0)
        try:
            call(t, r, s)
        except Exception as error:
            results[name] = {
                "error": type(error).__name__,
                "mro": [cls.__name__ for cls in type(error).__mro__],
                "errno": getattr(error, "errno", None),
                "message": str(error),
            }
        else:
            results[name] = {"error": None, "mro": [], "errno": None, "message": ""}
        finally:
            path.chmod(mode)

    meta = lambda d, t, r, s: d / "meta.json"  # noqa: E731
    log = lambda d, t, r, s: d / "messages.jsonl"  # noqa: E731
    status = lambda d, t, r, s: d / "runs" / r / "status.json"  # noqa: E731
    step = lambda d, t, r, s: d / "runs" / r / "steps" / f"{s}.json"  # noqa: E731
    thread = lambda d, t, r, s: d  # noqa: E731
    runs = lambda d, t, r, s: d / "runs"  # noqa: E731
    steps = lambda d, t, r, s: d / "runs" / r / "steps"  # noqa: E731

    case("meta.json/get_thread", meta, lambda t, r, s: store.get_thread(t))
    case(
        "meta.json/update_thread_metadata",
        meta,
        lambda t, r, s: store.update_thread_metadata(t, {"a": "b"}),
    )
    case("messages.jsonl/list_messages", log, lambda t, r, s: store.list_messages(t))
    case("messages.jsonl/latest_messages", log, lambda t, r, s: store.latest_messages(t))
    case(
        "messages.jsonl/append_message",
        log,
        lambda t, r, s: store.append_message(t, new_message(t, "assistant", "x")),
    )
    case("status.json/get_run", status, lambda t, r, s: store.get_run(t, r))
    case(
        "status.json/update_run_status",
        status,
        lambda t, r, s: store.update_run_status(t, r, RunStatus("failed")),
    )
    case("status.json/cancel_run", status, lambda t, r, s: store.cancel_run(t, r))
    case("step file/get_step", step, lambda t, r, s: store.get_step(t, r, s))
    case("thread dir/get_thread", thread, lambda t, r, s: store.get_thread(t))
    case("thread dir/list_messages", thread, lambda t, r, s: store.list_messages(t))
    case("runs dir/get_run", runs, lambda t, r, s: store.get_run(t, r))
    case("runs dir/list_runs", runs, lambda t, r, s: store.list_runs(t))
    case("steps dir/list_steps", steps, lambda t, r, s: store.list_steps(t, r))
    case("steps dir/get_step", steps, lambda t, r, s: store.get_step(t, r, s))  # fmt: skip
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
