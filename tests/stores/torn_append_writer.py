"""Appends one very large message for test_crash, so that a SIGKILL can land while the
line is being written. Prints "ready" once the message is built, "appended" after the
call returns.

Usage: python torn_append_writer.py ROOT THREAD_ID SIZE
"""

from __future__ import annotations

import sys

from stores import ThreadStore, new_message


def main() -> None:
    root, thread_id, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = ThreadStore(root)
    message = new_message(thread_id, "user", "x" * size)
    print("ready", flush=True)
    store.append_message(thread_id, message)
    print("appended", message.id, flush=True)


if __name__ == "__main__":
    main()
