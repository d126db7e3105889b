"""Startup checks on the store's directory: can we write there, and do locks hold?

The store's guarantees rest on two things the filesystem must provide: durable writes
(create, fsync, hard link, rename, unlink) and flock locks that exclude other processes.
A network filesystem that ignores locks (NFS mounted `nolock` or `local_lock=all`, many
FUSE and SMB mounts) accepts every lock and lets two writers interleave, which corrupts
the store silently. The web server and the run worker call `check_store_directory` once
at start and refuse to run when it fails.

The lock test takes the lock in a child process and then tries it, without waiting,
from this one: only a lock the filesystem really enforces is refused here. A lock
honoured only between processes of one host cannot be told apart from here; see the
README, "Operating Threadsite", for what several hosts need.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from .errors import StoreError
from .files import TEMP_PREFIX

# The child's side: take the lock named on the command line, say so, and hold it until
# its standard input closes. Run with -I -S, so it starts in a few milliseconds.
_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX)
except OSError as error:
    print("error", error.errno, flush=True)
    sys.exit(0)
print("locked", flush=True)
sys.stdin.read()
"""
CHILD_SECONDS = 15.0  # for the child to start and take the lock


class StoreDirectoryUnusable(StoreError):
    """The store's directory cannot be written, or its locks do not exclude others."""

    def __init__(self, root: Path, problem: str) -> None:
        super().__init__(f"The store directory {root} cannot be used: {problem}")
        self.root = root
        self.problem = problem


def check_store_directory(root: str | os.PathLike[str]) -> None:
    """Raise StoreDirectoryUnusable unless `root` (an existing directory) takes durable
    writes and its flock locks exclude another process. Leaves nothing behind but, after
    a crash in the middle, a temp file that store repair sweeps."""
    path = Path(root).absolute()
    probe = f"{TEMP_PREFIX}preflight-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise StoreDirectoryUnusable(path, f"it cannot be opened ({_reason(error)}).") from None
    try:
        _check_writes(path, dir_fd, probe)
        _check_locks(path, dir_fd, probe + ".lock")
    finally:
        for name in (probe, probe + ".link", probe + ".lock"):
            with suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
        os.close(dir_fd)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _check_writes(root: Path, dir_fd: int, name: str) -> None:
    step = "creating a file"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
        try:
            step = "writing a file"
            os.write(fd, b"threadsite preflight\n")
            step = "syncing a file to disk (fsync)"
            os.fsync(fd)
        finally:
            os.close(fd)
        step = "making a hard link (records are published with link)"
        os.link(name, name + ".link", src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        step = "renaming a file over another (records are replaced with rename)"
        os.rename(name + ".link", name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        step = "syncing the directory (fsync)"
        os.fsync(dir_fd)
        step = "removing a file"
        os.unlink(name, dir_fd=dir_fd)
    except OSError as error:
        raise StoreDirectoryUnusable(
            root, f"{step} there failed ({_reason(error)}). It must be writable by this user."
        ) from None


def _check_locks(root: Path, dir_fd: int, name: str) -> None:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    except OSError as error:
        reason = _reason(error)
        raise StoreDirectoryUnusable(root, f"creating a lock file failed ({reason}).") from None
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _HOLDER, str(root / name)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            answer = _first_line(child)
            if answer.startswith("error"):
                code = int(answer.split()[1]) if answer.split()[1:] else 0
                raise StoreDirectoryUnusable(
                    root,
                    f"the filesystem refuses file locks ({os.strerror(code)}). Threadsite "
                    "needs flock locks that every process respects.",
                )
            if answer != "locked":
                raise StoreDirectoryUnusable(
                    root, "a helper process could not take a file lock there (it did not start)."
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StoreDirectoryUnusable(
                        root, f"taking a file lock failed ({_reason(error)})."
                    ) from None
            else:
                raise StoreDirectoryUnusable(
                    root,
                    "its file locks do not exclude another process: a lock held by one "
                    "process was granted to a second at the same time. The filesystem "
                    "ignores locks (an NFS mount with 'nolock' or 'local_lock', or a FUSE or "
                    "SMB mount?), and concurrent writers would corrupt the store. Use a local "
                    "filesystem, or a shared one whose locks work across processes and hosts.",
                )
        finally:
            _stop(child)
        # The child is gone, so its lock must be too: a lock that outlives its holder
        # would stall every writer.
        deadline = time.monotonic() + CHILD_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StoreDirectoryUnusable(
                        root, f"taking a file lock failed ({_reason(error)})."
                    ) from None
                if time.monotonic() >= deadline:
                    raise StoreDirectoryUnusable(
                        root, "a file lock stayed held after the process holding it exited."
                    ) from None
                time.sleep(0.01)
    finally:
        os.close(fd)


def _first_line(child: subprocess.Popen[bytes]) -> str:
    """The child's first line of output, or "" if it says nothing in time."""
    assert child.stdout is not None
    deadline = time.monotonic() + CHILD_SECONDS
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return ""
        ready, _, _ = select.select([child.stdout], [], [], left)
        if not ready:
            return ""
        chunk = os.read(child.stdout.fileno(), 256)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace").strip()


def _stop(child: subprocess.Popen[bytes]) -> None:
    try:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=CHILD_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        child.kill()
        child.wait()
    finally:
        if child.stdout is not None:
            child.stdout.close()
