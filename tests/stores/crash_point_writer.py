"""Crash injection for test_crash: runs complete_run and dies on the spot (os._exit, no
cleanup, no undo, as after SIGKILL) just before the Nth call of one kind of system call
inside it, so that every point of the completion can be hit deterministically.

Usage: python crash_point_writer.py ROOT THREAD_ID RUN_ID KIND N
KIND is "fsync", "write" or "publish" (rename / replace / link). Prints the reply's
message ID first, then "completed" if the completion returned (N beyond its calls).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from stores import ThreadStore, new_message

KINDS = {"fsync": ("fsync",), "write": ("write",), "publish": ("rename", "replace", "link")}


def main() -> None:
    root, thread_id, run_id, kind, n = sys.argv[1:6]
    store = ThreadStore(root)
    reply = new_message(thread_id, "assistant", "the reply", run_id=run_id)
    print(reply.id, flush=True)
    calls = 0

    def arm(name: str) -> None:
        real = getattr(os, name)

        def dying(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == int(n):
                os._exit(137)
            return real(*args, **kwargs)

        setattr(os, name, dying)

    for name in KINDS[kind]:
        arm(name)
    store.complete_run(thread_id, run_id, reply)
    print("completed", flush=True)


if __name__ == "__main__":
    main()
