"""Signed-in users without a database query per request.

Every dashboard request needs its user (LoginRequiredMiddleware) and most need the
user's role (permissions.can_write). Django's ModelBackend reads both from SQLite on
every request, which was most of what an open run page's once-a-second poll cost.

`CachedModelBackend` keeps, in each server process, the users it has loaded and their
role, and drops them all whenever any account, group or group membership changes
anywhere. Every such change made through Django (the `adduser`, `deactivate` and
`changepassword` commands, a sign-in, the shell) rewrites a small generation file in
the data directory, once when it is made and again when it commits; each request reads
that file (a few microseconds) and compares it with the generation its process's users
were loaded under. A change that bypasses Django's signals (raw SQL, a queryset
`update()`) is seen once the entry is older than THREADSITE_AUTH_CACHE_SECONDS.

What does not change: the session's password hash is still checked on every request
(django.contrib.auth.get_user does it), so a new password still signs out the other
sessions at once, and an inactive or deleted account is never served from here.
"""

from __future__ import annotations

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
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from threadsite.dashboard.permissions import query_can_write

logger = logging.getLogger(__name__)

BACKEND = "threadsite.auth_cache.CachedModelBackend"


@dataclass(frozen=True)
class _Entry:
    values: tuple[Any, ...]  # the user's row, in the order of _field_names()
    can_write: bool
    loaded_at: float  # time.monotonic()


_lock = threading.Lock()
_entries: dict[str, _Entry] = {}
_generation: bytes | None = None  # what _entries were loaded under


@cache
def _field_names() -> tuple[str, ...]:
    return tuple(field.attname for field in get_user_model()._meta.concrete_fields)


def read_generation() -> bytes | None:
    """The current generation of the account data; None when it cannot be read (the
    cache is then bypassed rather than trusted)."""
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
        os.close(fd)


def new_generation() -> None:
    """Tell every process that account data changed: a new random generation, written
    whole (temporary file, then rename) so that readers never see half of one."""
    path = os.fspath(settings.THREADSITE_AUTH_GENERATION_FILE)
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(temporary, "wb") as file:
            file.write(secrets.token_bytes(16))
        os.replace(temporary, path)
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
    """Drop this process's cached users (tests; the generation file does it otherwise)."""
    global _generation
    with _lock:
        _entries.clear()
        _generation = None


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


class CachedModelBackend(ModelBackend):
    """ModelBackend whose get_user (once per request) is answered from memory while no
    account data has changed. Each request gets a fresh user instance, never one shared
    with another request, carrying its role as `cached_can_write`."""

    def get_user(self, user_id: Any) -> Any:
        global _generation
        generation = read_generation()  # before the database: see _account_data_changed
        if generation is None:
            return super().get_user(user_id)
        key = str(user_id)
        max_age = float(settings.THREADSITE_AUTH_CACHE_SECONDS)
        with _lock:
            if generation != _generation:
                _entries.clear()
                _generation = generation
            entry = _entries.get(key)
        if entry is not None and time.monotonic() - entry.loaded_at < max_age:
            user = get_user_model().from_db(DEFAULT_DB_ALIAS, _field_names(), entry.values)
            user.cached_can_write = entry.can_write
            return user
        user = super().get_user(user_id)  # None for an unknown or inactive account
        if user is None:
            return None
        user.cached_can_write = query_can_write(user)
        entry = _Entry(
            tuple(getattr(user, name) for name in _field_names()),
            user.cached_can_write,
            time.monotonic(),
        )
        with _lock:
            if _generation == generation:  # no change seen since this request began
                _entries[key] = entry
        return user
