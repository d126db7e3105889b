"""Record IDs: validation of untrusted IDs and generation of fresh, time-ordered ones."""

from __future__ import annotations

import os
import re
import threading
import time

# One safe path component: ASCII letters, digits, "_" and "-", starting with a letter or
# digit, at most 128 characters. fullmatch with \Z-like semantics: no trailing newline.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", re.ASCII)


def is_safe_id(value: object) -> bool:
    """True when `value` can name a file under the store root without escaping it."""
    return isinstance(value, str) and _SAFE_ID.fullmatch(value) is not None


_lock = threading.Lock()
_last_ns = 0


def _time_ordered_hex() -> str:
    """32 hex digits: 64 bits of nanosecond clock, strictly increasing in this process,
    then 64 random bits so that IDs made at once by other processes never collide."""
    global _last_ns
    with _lock:
        now = max(time.time_ns(), _last_ns + 1)
        _last_ns = now
    return f"{now:016x}{os.urandom(8).hex()}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{_time_ordered_hex()}"
