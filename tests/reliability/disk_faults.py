"""Test-only fault injection for "bad disks": os.write, os.fsync, os.rename and os.close
fail with ENOSPC or EIO, but only on files under one directory (the data directory), so
the test harness, the sign-in database and the logs keep working.

A failing close still closes the file first, as Linux does: the descriptor is gone
whatever close() reports, so no lock is left held.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPS = ("write", "fsync", "rename", "close")
ERRNOS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO}


@dataclass
class Fault:
    op: str  # one of OPS
    error: int  # errno.ENOSPC or errno.EIO
    nth: int = 1  # the first call that fails (counted on this op, under the root)
    sticky: bool = True  # keep failing after the first (the disk stays bad)


class DiskFaults:
    """Counts calls of each op under `root`; `fault` makes some of them fail."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.fault: Fault | None = None
        self.calls = dict.fromkeys(OPS, 0)
        self.failed = 0
        self.only_thread: int | None = None  # when set, other threads are left alone
        self._real: dict[str, Callable[..., Any]] = {}

    def _under_root(self, fd: int | None = None, path: Any = None) -> bool:
        if self.only_thread is not None and threading.get_ident() != self.only_thread:
            return False
        try:
            where = os.readlink(f"/proc/self/fd/{fd}") if fd is not None else os.fsdecode(path)
        except (OSError, TypeError):
            return False
        return where == self.root or where.startswith(self.root + os.sep)

    def _should_fail(self, op: str) -> bool:
        self.calls[op] += 1
        fault = self.fault
        if fault is None or fault.op != op:
            return False
        count = self.calls[op]
        if count == fault.nth or (fault.sticky and count > fault.nth):
            self.failed += 1
            return True
        return False

    def _raise(self) -> None:
        assert self.fault is not None
        raise OSError(self.fault.error, os.strerror(self.fault.error))

    def install(self) -> None:
        real = self._real = {op: getattr(os, op) for op in OPS}

        def write(fd: int, data: Any) -> int:
            if self._under_root(fd) and self._should_fail("write"):
                self._raise()
            return real["write"](fd, data)

        def fsync(fd: Any) -> None:
            number = fd if isinstance(fd, int) else fd.fileno()
            if self._under_root(number) and self._should_fail("fsync"):
                self._raise()
            return real["fsync"](fd)

        def rename(src: Any, dst: Any, *, src_dir_fd: int | None = None, **kwargs: Any) -> None:
            where = self._under_root(src_dir_fd) if src_dir_fd is not None else False
            where = where or self._under_root(path=os.path.abspath(os.fsdecode(src)))
            if where and self._should_fail("rename"):
                self._raise()
            return real["rename"](src, dst, src_dir_fd=src_dir_fd, **kwargs)

        def close(fd: int) -> None:
            under = self._under_root(fd)
            real["close"](fd)
            if under and self._should_fail("close"):
                self._raise()

        os.write, os.fsync, os.rename, os.close = write, fsync, rename, close  # type: ignore[assignment]

    def uninstall(self) -> None:
        for op, function in self._real.items():
            setattr(os, op, function)

    @contextmanager
    def failing(self, fault: Fault | None) -> Iterator[DiskFaults]:
        """Count (and, with a fault, fail) the calls made inside the block."""
        self.fault = fault
        self.calls = dict.fromkeys(OPS, 0)
        self.failed = 0
        try:
            yield self
        finally:
            self.fault = None


@contextmanager
def bad_disk(root: Path) -> Iterator[DiskFaults]:
    faults = DiskFaults(root)
    faults.install()
    try:
        yield faults
    finally:
        faults.uninstall()
