"""Low-level file operations under the store root.

Every path is walked one component at a time with directory file descriptors and
O_NOFOLLOW, so no symlink inside the root is ever followed and no component can climb
out of it. Records are published whole (temp file, fsync, rename or link, directory
fsync); log lines are appended with O_APPEND and fsynced before the call returns.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from .errors import StoreIOError

TEMP_PREFIX = ".tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_CHUNK = 64 * 1024

# errnos that mean "this name is not there (or is a symlink / not a directory)".
_MISSING = frozenset({errno.ENOENT, errno.ELOOP, errno.ENOTDIR})


# Filesystems on which every change to a directory shows in its `stat` at once, to every
# process: local disks and memory. A network filesystem's client may answer `stat` from
# a cache for seconds, so there only reading a file tells what it holds now.
LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "bcachefs", "tmpfs",
     "overlay"}
)  # fmt: skip


def filesystem_type(path: str | os.PathLike[str]) -> str | None:
    """The type of the filesystem holding `path` ("ext4", "nfs4", ...), or None where
    the system does not say (no /proc)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as handle:
            mounts = handle.read().splitlines()
    except OSError:
        return None
    return mount_type(os.path.realpath(path), mounts)


def mount_type(path: str, mounts: list[str]) -> str | None:
    """The type of the innermost mount holding the absolute `path`, from lines in the
    format of /proc/mounts; of two mounts on one point, the later is the one seen."""
    found, depth = None, -1
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape_mount_point(fields[1])
        inside = point == "/" or path == point or path.startswith(point + "/")
        if inside and len(point) >= depth:
            found, depth = fields[2], len(point)
    return found


def _unescape_mount_point(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes.
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, plain)
    return field


class Missing(Exception):
    """Internal: a path component is absent, a symlink, or of the wrong kind."""

    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.depth = depth


class BadRecord(Exception):
    """Internal: a record file exists but does not hold a JSON object."""


def io_error(action: str, error: OSError) -> StoreIOError:
    return StoreIOError(action, error)


def open_dir(parent_fd: int, names: tuple[str, ...], *, create: bool = False) -> int:
    """Open the directory `names` below `parent_fd`, component by component.

    Raises Missing(depth) naming the first absent component; with `create`, absent
    directories are made (and their parents fsynced) instead.
    """
    if len(names) == 1 and not create:
        # The common case, one component: no dup, one open.
        try:
            return os.open(names[0], _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as error:
            if error.errno in _MISSING:
                raise Missing(0) from None
            raise
    if not names:
        return os.dup(parent_fd)  # the caller closes what it gets
    fd = parent_fd  # the caller's: never closed here
    try:
        for depth, name in enumerate(names):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise Missing(depth) from None
                with suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                os.fsync(fd)
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                if error.errno in _MISSING:
                    raise Missing(depth) from None
                raise
            if fd != parent_fd:
                os.close(fd)
            fd = child
        return fd
    except BaseException:
        if fd != parent_fd:
            os.close(fd)
        raise


@contextmanager
def opened_dir(parent_fd: int, names: tuple[str, ...], *, create: bool = False) -> Iterator[int]:
    fd = open_dir(parent_fd, names, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def is_regular_file(dir_fd: int, name: str) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as error:
        if error.errno in _MISSING:
            return False
        raise
    if (st.st_mode & 0o170000) == 0o100000:
        return True
    if (st.st_mode & 0o170000) == 0o120000:  # a symlink counts as not there
        return False
    # Something that is neither (a directory where a file belongs): a damaged store.
    raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), name)


def read_bytes(dir_fd: int, name: str) -> bytes:
    """The whole file. Raises Missing(0) if absent or a symlink."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in _MISSING:
            raise Missing(0) from None
        raise
    try:
        first = os.read(fd, _READ_CHUNK)
        if len(first) < _READ_CHUNK:
            return first  # a regular file reads short only at its end: one call for a record
        chunks = [first]
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_json(dir_fd: int, name: str) -> dict[str, Any]:
    data = read_bytes(dir_fd, name)
    try:
        value = json.loads(data)
    except ValueError:
        raise BadRecord(name) from None
    if not isinstance(value, dict):
        raise BadRecord(name)
    return value


def encode_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_bytes(
    dir_fd: int, name: str, body: bytes, *, exclusive: bool = False, durable: bool = True
) -> None:
    """Publish `name` whole: temp file, fsync, then rename over it, or, when `exclusive`,
    hard-link into place so that an existing file is never replaced (FileExistsError).
    `durable=False` skips the fsyncs, for disposable files (drafts, heartbeats) that are
    rewritten often and need only be whole, never stale-but-safe."""
    temp = f"{TEMP_PREFIX}{name}-{os.urandom(6).hex()}"
    fd = os.open(
        temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
        dir_fd=dir_fd,
    )  # fmt: skip
    try:
        try:
            _write_all(fd, body)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            os.unlink(temp, dir_fd=dir_fd)
        else:
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    if durable:
        os.fsync(dir_fd)


def write_record(dir_fd: int, name: str, value: dict[str, Any], *, exclusive: bool) -> None:
    write_bytes(dir_fd, name, encode_json(value) + b"\n", exclusive=exclusive)


def append_line(dir_fd: int, name: str, value: dict[str, Any]) -> int:
    """Append one JSON line and fsync it; returns the offset where the line starts.

    A torn tail left by a crash (no final newline) is closed off first, so it costs only
    itself. On failure the file is cut back to its old length: nothing half-written is
    left to be read as acknowledged.
    """
    return append_encoded_line(dir_fd, name, encode_json(value) + b"\n")


def append_encoded_line(dir_fd: int, name: str, line: bytes) -> int:
    """append_line for a line already encoded (ending with a newline), so that callers
    can encode before taking a lock."""
    fd = os.open(
        name, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
        dir_fd=dir_fd,
    )  # fmt: skip
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError:
            with suppress(OSError):
                os.ftruncate(fd, size)
            raise
        if size == 0:
            os.fsync(dir_fd)  # a new file: make its directory entry durable too
        return size + (1 if line[:1] == b"\n" else 0)
    finally:
        os.close(fd)


@contextmanager
def exclusive_lock(dir_fd: int, name: str) -> Iterator[None]:
    """Hold an exclusive flock on `name` (created if absent). flock locks belong to the
    open file, so threads of one process exclude each other as processes do."""
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _open_log(dir_fd: int, name: str) -> int | None:
    """A read fd on a log, or None when there is no log (yet)."""
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in _MISSING:
            return None
        raise


def lines_backward(dir_fd: int, name: str, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, line) for each complete line ending at or before `end`, last first.

    Reads the file backwards in chunks, so reading the last N lines costs work
    proportional to N, not to the file. A trailing fragment with no newline (a write in
    flight, or a torn tail) is not a complete line and is left out.
    """
    fd = _open_log(dir_fd, name)
    if fd is None:
        return
    try:
        size = os.fstat(fd).st_size
        position = size if end is None else min(end, size)
        # Drop everything after the last newline before `position`.
        buffer = b""
        complete = False
        while position > 0:
            start = max(0, position - _READ_CHUNK)
            chunk = os.pread(fd, position - start, start)
            position = start
            buffer = chunk + buffer
            if not complete:
                cut = buffer.rfind(b"\n")
                if cut < 0:
                    continue
                buffer = buffer[: cut + 1]
                complete = True
            # buffer ends with a newline; split off whole lines from its end.
            while True:
                cut = buffer.rfind(b"\n", 0, len(buffer) - 1)
                if cut < 0:
                    break
                line = buffer[cut + 1 : -1]
                buffer = buffer[: cut + 1]
                yield position + cut + 1, line
        if complete and buffer:
            yield 0, buffer[:-1]
    finally:
        os.close(fd)


def touch(dir_fd: int, name: str) -> None:
    """Create an empty marker file (if absent) and make its directory entry durable."""
    fd = os.open(
        name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd
    )
    os.close(fd)
    os.fsync(dir_fd)


def remove(dir_fd: int, name: str) -> None:
    """Remove a file if it is there."""
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def list_names(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as entries:
        return [entry.name for entry in entries]


def truncate(dir_fd: int, name: str, size: int) -> None:
    """Cut a file back to `size` bytes, durably (undoing an append)."""
    fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def lines_forward(dir_fd: int, name: str, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, line) for each complete line starting at or after `start`, in order.
    A trailing fragment with no newline is left out."""
    fd = _open_log(dir_fd, name)
    if fd is None:
        return
    try:
        position = start
        buffer = b""
        while chunk := os.pread(fd, _READ_CHUNK, position + len(buffer)):
            buffer += chunk
            while (cut := buffer.find(b"\n")) >= 0:
                yield position, buffer[:cut]
                position += cut + 1
                buffer = buffer[cut + 1 :]
    finally:
        os.close(fd)


def append_bytes(dir_fd: int, name: str, data: bytes) -> None:
    """Append without fsync: for bulk writes that sync once at the end."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
