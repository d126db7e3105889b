"""Test-only WSGI entry point: threadsite.wsgi on a "filesystem" whose flock locks are
ignored (every lock is granted at once), as on an NFS mount with `nolock`. The server
must refuse to start. Used by test_preflight.py; never by the product."""

from __future__ import annotations

import fcntl


def _granted(fd: int, operation: int) -> None:
    return None


fcntl.flock = _granted  # type: ignore[assignment]

from threadsite.wsgi import application  # noqa: E402,F401
