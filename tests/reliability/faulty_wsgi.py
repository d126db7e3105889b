"""Test-only WSGI entry point for the bad-disk suite: threadsite.wsgi plus a fault switch.

Before each request it reads the JSON file named by THREADSITE_TEST_FAULT_FILE, e.g.
{"op": "fsync", "error": 28, "nth": 1, "sticky": true}; while that request runs, in its
own thread, that operation fails on files under the data directory (disk_faults.py).
Only this module, which lives with the tests, reads that variable: the product has no
fault switch.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from disk_faults import DiskFaults, Fault

from threadsite.wsgi import application as threadsite_application

CONTROL = Path(os.environ["THREADSITE_TEST_FAULT_FILE"])
_faults = DiskFaults(Path(os.environ["THREADSITE_DATA_DIR"]).resolve())
_faults.install()
_one_at_a_time = threading.Lock()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    try:
        spec = json.loads(CONTROL.read_text())
    except (OSError, ValueError):
        spec = None
    if not spec:
        return threadsite_application(environ, start_response)
    with _one_at_a_time:
        _faults.only_thread = threading.get_ident()
        with _faults.failing(Fault(**spec)):
            return threadsite_application(environ, start_response)
