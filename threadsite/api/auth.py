"""Bearer API keys, separate from staff sign-ins.

A request is let in when `Authorization: Bearer <key>` names a key from
THREADSITE_API_KEYS or one kept in the keys file. The file holds no keys, only their
SHA-256 hashes, one key a line: `NAME HASH CREATED`. `manage.py apikey` writes it whole
(temporary file, fsync, rename) under a lock, and every server process notices a new
version at its next request, so a revoked key stops working at once. Keys never reach a
log line.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest

from .errors import SERVER_ERROR, ApiError

log = logging.getLogger("threadsite.api")

KEY_PREFIX = "ts_"
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
_DIGEST = re.compile(r"[0-9a-f]{64}", re.ASCII)


@dataclass(frozen=True)
class StoredKey:
    name: str
    digest: str  # SHA-256 of the key, hex
    created_at: str  # ISO 8601, UTC

    @property
    def fingerprint(self) -> str:
        """Enough of the hash to tell keys apart in a listing, never enough to matter."""
        return self.digest[:8]


class KeyNameTaken(Exception):
    pass


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)  # 40 URL-safe characters


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# ------------------------------------------------------------------ the keys file


def read_keys(path: Path) -> list[StoredKey]:
    """The keys in the file (none if it does not exist); lines that do not parse are
    skipped with a warning naming the line number, never its content."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or not KEY_NAME.fullmatch(fields[0]) or not _DIGEST.fullmatch(fields[1]):
            log.warning("skipping line %d of the API keys file: not NAME HASH [CREATED]", number)
            continue
        keys.append(StoredKey(fields[0], fields[1], fields[2] if len(fields) > 2 else ""))
    return keys


def create_key(path: Path, name: str) -> str:
    """Add a key named `name` and return it: the only time it is ever seen."""
    if not KEY_NAME.fullmatch(name):
        raise ValueError(
            "A key name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit."
        )
    key = generate_key()
    with _locked(path):
        keys = read_keys(path)
        if any(stored.name == name for stored in keys):
            raise KeyNameTaken(name)
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _write_keys(path, [*keys, StoredKey(name, digest(key), created)])
    return key


def revoke_key(path: Path, name: str) -> bool:
    """Remove the key named `name`; False if there is none."""
    with _locked(path):
        keys = read_keys(path)
        kept = [stored for stored in keys if stored.name != name]
        if len(kept) == len(keys):
            return False
        _write_keys(path, kept)
    return True


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise changes to the keys file across processes (two commands at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_keys(path: Path, keys: list[StoredKey]) -> None:
    lines = ["# Threadsite API keys (SHA-256 hashes): NAME HASH CREATED. See manage.py apikey."]
    lines += [f"{key.name} {key.digest} {key.created_at}".rstrip() for key in keys]
    body = ("\n".join(lines) + "\n").encode()
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _FileKeys:
    """The keys file's hashes, read again whenever the file is replaced."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._identity: tuple[int, int, int] | None = None
        self._digests: list[tuple[str, str]] = []

    def digests(self, path: Path) -> list[tuple[str, str]]:
        """(name, digest) pairs; OSError if the file exists but cannot be read."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return []
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if path != self._path or identity != self._identity:
                self._digests = [(key.name, key.digest) for key in read_keys(path)]
                self._path, self._identity = path, identity
            return self._digests


_file_keys = _FileKeys()


def _configured() -> list[tuple[str, str]]:
    from_env = [
        (f"THREADSITE_API_KEYS[{index}]", digest(key))
        for index, key in enumerate(settings.THREADSITE_API_KEYS)
    ]
    try:
        from_file = _file_keys.digests(Path(settings.THREADSITE_API_KEYS_FILE))
    except OSError as error:
        log.error("cannot read the API keys file: %s", error.strerror or error)
        raise ApiError(
            503,
            "The server cannot read its API keys. Try again shortly.",
            type=SERVER_ERROR,
            headers={"Retry-After": "10"},
        ) from None
    return from_env + from_file


def authenticate(request: HttpRequest) -> str:
    """The name of the key the request carries; ApiError(401) if it carries none that
    is valid."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _unauthorized(
            "You didn't provide an API key. Send it in an 'Authorization: Bearer <key>' header."
        )
    configured = _configured()
    if not configured:
        raise _unauthorized(
            "This server has no API keys yet. An operator can create one with "
            "'manage.py apikey create NAME' or set THREADSITE_API_KEYS.",
            code="invalid_api_key",
        )
    presented = digest(key)
    found = None
    for name, stored in configured:
        if hmac.compare_digest(presented, stored) and found is None:
            found = name
    if found is None:
        raise _unauthorized("Incorrect API key provided.", code="invalid_api_key")
    return found


def _unauthorized(message: str, *, code: str | None = None) -> ApiError:
    return ApiError(401, message, code=code, headers={"WWW-Authenticate": "Bearer"})
