"""Signed-in state without a database or session-file read per request.

Every dashboard request needs its session, its user (LoginRequiredMiddleware) and most
need the user's role (permissions.can_write). Read from SQLite and the session files each
time, they were most of what an open run page's once-a-second poll cost.

Each server process keeps, in memory, the sessions (`SessionStore`, SESSION_ENGINE
"threadsite.auth_cache"), the users with their role (`CachedModelBackend`) it has read,
and which user each session signs in (`AuthenticationMiddleware`), and drops them all
whenever any session, account, group or group membership changes anywhere. Every such
change made through Django (signing in or out, the `adduser`, `deactivate` and
`changepassword` commands, the shell) rewrites a small generation file in the data
directory; each request reads that file (a few microseconds) and compares it with the
generation its process's entries were loaded under. A change that bypasses Django (raw
SQL, a queryset `update()` or `delete()`) is seen once the entry is older than
THREADSITE_AUTH_CACHE_SECONDS, and so is a session reaching its expiry.

What does not change: a new password still signs out the other sessions at once (the
session's password hash is checked by django.contrib.auth.get_user whenever a session's
user is looked up, and a new password is an account change, so no earlier answer is
kept); an account deactivated or deleted through Django is refused at its next request;
and the database stays the record of every session (cached_db), the files under
`sessions/` sparing it the reads of a process that has not seen a session yet.
"""

from __future__ import annotations

import copy
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth import middleware as auth_middleware
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.cached_db import SessionStore as CachedDbSessionStore
from django.core.management.base import CommandError
from django.core.signals import request_finished, request_started
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from threadsite.dashboard.permissions import query_can_write

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _User:
    values: tuple[Any, ...]  # the user's row, in the order of _field_names()
    can_write: bool

    @classmethod
    def of(cls, user: Any) -> _User:
        values = tuple(getattr(user, name) for name in _field_names())
        can_write = getattr(user, "cached_can_write", None)  # set by CachedModelBackend
        return cls(values, query_can_write(user) if can_write is None else bool(can_write))

    def instance(self) -> Any:
        """A new user object for one request, never shared with another."""
        user = get_user_model().from_db(DEFAULT_DB_ALIAS, _field_names(), self.values)
        user.cached_can_write = self.can_write
        return user


class _GenerationCache:
    """Entries of one process, each valid while the generation file reads as it did
    before the entry was loaded, and for at most THREADSITE_AUTH_CACHE_SECONDS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Any]] = {}
        self._generation: bytes | None = None  # what the entries were loaded under

    def get(self, key: str, generation: bytes) -> Any | None:
        max_age = float(settings.THREADSITE_AUTH_CACHE_SECONDS)
        with self._lock:
            if generation != self._generation:
                self._entries.clear()
                self._generation = generation
            found = self._entries.get(key)
        if found is None or time.monotonic() - found[0] >= max_age:
            return None
        _note_read(loaded_at=found[0])
        return found[1]

    def put(self, key: str, generation: bytes, value: Any, *, loaded_at: float) -> None:
        """Keep `value`, read from the database or files after `generation` was read and
        at `loaded_at`, unless a newer generation has been seen since: then what was read
        may be older than that change."""
        with self._lock:
            if self._generation == generation:
                self._entries[key] = (loaded_at, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation = None


_users = _GenerationCache()
_sessions = _GenerationCache()
_signed_in = _GenerationCache()  # session key: the user that session signs in


@cache
def _field_names() -> tuple[str, ...]:
    return tuple(field.attname for field in get_user_model()._meta.concrete_fields)


_UNREAD = object()
# The generation this thread read during the request it is serving: the session and then
# the user are checked against one read of the file, not two.
_this_request = threading.local()


def _request_started(**kwargs: Any) -> None:
    _this_request.serving, _this_request.generation = True, _UNREAD


def _request_finished(**kwargs: Any) -> None:
    _this_request.serving, _this_request.generation = False, _UNREAD


def _note_read(*, loaded_at: float) -> None:
    """While a request finds who its session signs in: the oldest read it relied on."""
    oldest = getattr(_this_request, "oldest_read", None)
    if oldest is not None and loaded_at < oldest:
        _this_request.oldest_read = loaded_at


def read_generation() -> bytes | None:
    """The current generation of sessions and accounts, read once per request (and every
    time outside one); None when it cannot be read (the caches are then bypassed rather
    than trusted)."""
    if not getattr(_this_request, "serving", False):
        return _read_generation_file()
    if _this_request.generation is _UNREAD:
        _this_request.generation = _read_generation_file()
    return _this_request.generation  # type: ignore[no-any-return]


def _read_generation_file() -> bytes | None:
    try:
        fd = os.open(settings.THREADSITE_AUTH_GENERATION_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""  # no change has been made since the data directory was created
    except OSError:
        return None
    try:
        return os.read(fd, 64)
    except OSError:
        return None
    finally:
        with suppress(OSError):  # what was read stands; the descriptor is gone either way
            os.close(fd)


def new_generation() -> None:
    """Tell every process that a session or an account changed: a new random generation,
    written whole (temporary file, then rename) so that readers never see half of one."""
    path = os.fspath(settings.THREADSITE_AUTH_GENERATION_FILE)
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(temporary, "wb") as file:
            file.write(secrets.token_bytes(16))
        os.replace(temporary, path)
        _this_request.generation = _UNREAD  # this request changed it: read it again
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise


@contextmanager
def announcing_account_changes() -> Iterator[None]:
    """For commands that change accounts inside a transaction: when the running servers
    cannot be told (the generation file cannot be written), the change is rolled back
    and the command says why."""
    try:
        yield
    except OSError as error:
        path = settings.THREADSITE_AUTH_GENERATION_FILE
        raise CommandError(
            f"Nothing was changed: the running servers could not be told about the change, "
            f"because {path} could not be written ({error.strerror or error})."
        ) from None


def forget_all() -> None:
    """Drop this process's cached users and sessions (tests; the generation file does it
    otherwise)."""
    _users.clear()
    _sessions.clear()
    _signed_in.clear()


def _account_data_changed(**kwargs: Any) -> None:
    # Now, so that a failure to tell the other processes fails the change itself (inside
    # a transaction it rolls back); and again after the commit, because a process may
    # have re-read the old rows under the first new generation in between.
    new_generation()
    transaction.on_commit(new_generation, robust=True)


def connect_signals() -> None:
    User = get_user_model()
    for model in (User, Group):
        name = model.__name__
        post_save.connect(_account_data_changed, sender=model, dispatch_uid=f"auth-save-{name}")
        post_delete.connect(_account_data_changed, sender=model, dispatch_uid=f"auth-del-{name}")
    m2m_changed.connect(
        _account_data_changed, sender=User.groups.through, dispatch_uid="auth-memberships"
    )
    request_started.connect(_request_started, dispatch_uid="auth-request-started")
    request_finished.connect(_request_finished, dispatch_uid="auth-request-finished")


class CachedModelBackend(ModelBackend):
    """ModelBackend whose get_user (once per request) is answered from memory while no
    account data has changed. Each request gets a fresh user instance, never one shared
    with another request, carrying its role as `cached_can_write`."""

    def get_user(self, user_id: Any) -> Any:
        generation = read_generation()  # before the database: see _account_data_changed
        if generation is None:
            return super().get_user(user_id)
        key = str(user_id)
        found: _User | None = _users.get(key, generation)
        if found is not None:
            return found.instance()
        loaded_at = time.monotonic()
        user = super().get_user(user_id)  # None for an unknown or inactive account
        if user is None:
            return None
        user.cached_can_write = query_can_write(user)
        _users.put(key, generation, _User.of(user), loaded_at=loaded_at)
        return user


class AuthenticationMiddleware(auth_middleware.AuthenticationMiddleware):
    """Django's, which remembers the answer of django.contrib.auth.get_user for each
    session while no session or account changes: a request whose session signed in a
    user a moment ago (an open page's poll) gets that user without its session being
    loaded or its password hash checked again. The answer is a function of the session
    and the user's row, which the caches above keep under the same rules."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        request.user = SimpleLazyObject(lambda: _user_of(request))


def _user_of(request: HttpRequest) -> Any:
    if not hasattr(request, "_cached_user"):  # where Django's middleware keeps it too
        request._cached_user = _signed_in_user(request)  # type: ignore[attr-defined]
    return request._cached_user  # type: ignore[attr-defined]


def _signed_in_user(request: HttpRequest) -> Any:
    session = request.session  # type: ignore[attr-defined]
    key = session.session_key  # from the cookie; the session itself is not loaded
    if key is None:  # no session (the API, /healthz): nothing to look up or read
        return auth.get_user(request)
    generation = read_generation()  # before the session and the user: as they do
    if generation is None:
        return auth.get_user(request)
    found: _User | None = _signed_in.get(key, generation)
    if found is not None:
        session.accessed = True  # the answer still depends on it: Vary: Cookie
        return found.instance()
    # The answer is as old as the oldest kept session or user it was made from, so that
    # it expires with them rather than a cache age later.
    _this_request.oldest_read = time.monotonic()
    try:
        user = auth.get_user(request)
    finally:
        loaded_at, _this_request.oldest_read = _this_request.oldest_read, None
    # Only a session that signs a user in as it stands: not one get_user ended or gave
    # a new key (a hash checked against an older secret).
    if user.is_authenticated and session.session_key == key and not session.modified:
        _signed_in.put(key, generation, _User.of(user), loaded_at=loaded_at)
    return user


class SessionStore(CachedDbSessionStore):
    """Django's cached_db sessions (the database, read through files every process
    shares), kept in this process's memory between changes. Each request gets its own
    copy of the session's data."""

    def load(self) -> dict[str, Any]:
        key = self.session_key
        generation = read_generation()  # before the files: see session_changed
        if key is None or generation is None:
            return super().load()
        found = _sessions.get(key, generation)
        if found is not None:
            return copy.deepcopy(found)
        loaded_at = time.monotonic()
        data = super().load()
        if data and self.session_key == key:  # not a session that has gone
            _sessions.put(key, generation, copy.deepcopy(data), loaded_at=loaded_at)
        return data

    def save(self, must_create: bool = False) -> None:
        super().save(must_create)
        session_changed()

    def delete(self, session_key: str | None = None) -> None:
        deleted = session_key or self.session_key
        super().delete(session_key)
        if deleted is not None:  # a session that never had a key had nothing to delete
            session_changed()


def session_changed() -> None:
    """After a session was written or deleted: the other processes drop what they hold.
    (After, not before: a process that read the new generation and then the old session
    would keep the old one.) A failure here leaves the change made; the other processes
    see it when their entries expire."""
    try:
        new_generation()
    except OSError:
        logger.exception(
            "Could not tell the other server processes that a session changed; they "
            "notice within THREADSITE_AUTH_CACHE_SECONDS."
        )
