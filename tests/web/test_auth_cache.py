"""Signed-in users served from memory (threadsite/auth_cache.py): no database query per
request once warm, and every change to an account or its role seen at the next request.
(The same across real server processes: tests/web/test_real_server.py.)"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from stores import ThreadStore, new_thread
from threadsite import auth_cache
from threadsite.auth_cache import SessionStore
from threadsite.caches import SharedFileCache
from threadsite.dashboard.permissions import VIEWERS_GROUP

pytestmark = pytest.mark.django_db

THREADS = "/threads/"


def queries_of(client: Client, path: str = THREADS) -> tuple[int, int]:
    """(status, number of database queries) of one GET."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    return response.status_code, len(captured.captured_queries)


def test_a_signed_in_request_asks_the_database_nothing_once_warm(staff_client: Client) -> None:
    assert queries_of(staff_client)[0] == 200  # loads the user and the role
    assert queries_of(staff_client) == (200, 0)
    assert queries_of(staff_client) == (200, 0)


def test_deactivating_an_account_signs_it_out_at_the_next_request(
    staff_client: Client, staff_user: Any
) -> None:
    assert queries_of(staff_client)[0] == 200
    staff_user.is_active = False
    staff_user.save()

    response = staff_client.get(THREADS)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_deactivate_command_signs_the_account_out(
    staff_client: Client, staff_user: Any, django_user_model: Any
) -> None:
    assert staff_client.get(THREADS).status_code == 200
    colleague = Client()
    colleague.force_login(django_user_model.objects.create_user("bo", is_staff=True))
    out = io.StringIO()

    call_command("deactivate", staff_user.username, stdout=out)

    assert "Deactivated account 'ada'" in out.getvalue()
    assert "Ended 1 session(s)." in out.getvalue()
    assert staff_client.get(THREADS).status_code == 302
    # Enabled again, the account needs a new sign-in: the old session (and any copy of
    # its cookie) ended with the deactivation.
    call_command("adduser", "ada", "--role", "staff", stdout=io.StringIO())
    assert staff_client.get(THREADS).status_code == 302
    assert colleague.get(THREADS).status_code == 200  # other accounts' sessions stay
    call_command("deactivate", "ada", stdout=io.StringIO())
    out = io.StringIO()
    call_command("deactivate", "ada", stdout=out)
    assert "already deactivated" in out.getvalue()
    with pytest.raises(CommandError, match="There is no account named 'nobody'"):
        call_command("deactivate", "nobody")


def test_joining_the_viewers_takes_the_forms_away_at_the_next_request(
    staff_client: Client, staff_user: Any, thread_store: ThreadStore
) -> None:
    thread = thread_store.create_thread(new_thread())
    page = f"/threads/{thread.id}/"
    assert 'id="start-run"' in staff_client.get(page).content.decode()
    assert queries_of(staff_client, page) == (200, 0)

    viewers, _ = Group.objects.get_or_create(name=VIEWERS_GROUP)
    staff_user.groups.add(viewers)

    assert 'id="start-run"' not in staff_client.get(page).content.decode()
    refused = staff_client.post(f"/threads/{thread.id}/messages", {"content": "hello"})
    assert refused.status_code == 403
    assert thread_store.list_messages(thread.id) == []

    viewers.user_set.remove(staff_user)  # the same membership, changed from the group

    assert 'id="start-run"' in staff_client.get(page).content.decode()


def test_a_new_password_signs_out_the_other_sessions(staff_client: Client, staff_user: Any) -> None:
    assert queries_of(staff_client)[0] == 200
    staff_user.set_password("a different passphrase 7")
    staff_user.save()

    assert staff_client.get(THREADS).status_code == 302


def test_a_change_made_behind_djangos_back_is_seen_within_the_cache_age(
    staff_client: Client, staff_user: Any, django_user_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert queries_of(staff_client)[0] == 200
    # A queryset update sends no signal, so nothing announces it ...
    django_user_model.objects.filter(pk=staff_user.pk).update(is_active=False)
    assert staff_client.get(THREADS).status_code == 200
    # ... until the cached user is older than THREADSITE_AUTH_CACHE_SECONDS.
    later = auth_cache.time.monotonic() + 61
    monkeypatch.setattr(auth_cache.time, "monotonic", lambda: later)

    assert staff_client.get(THREADS).status_code == 302


def test_a_change_during_the_database_read_is_not_kept(
    staff_client: Client, django_user_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change that commits while a request reads the user, and another request of this
    process that sees the change at once: the first request's (possibly old) rows are
    used once but not kept, so the next request reads again."""
    other = django_user_model.objects.create_user(username="bo", password="x", is_staff=True)
    read_user = ModelBackend.get_user
    interleaved = []

    def read_while_something_changes(self: ModelBackend, user_id: Any) -> Any:
        user = read_user(self, user_id)
        if not interleaved:
            interleaved.append(user_id)
            auth_cache.new_generation()  # another process changes an account meanwhile
            auth_cache.CachedModelBackend().get_user(other.pk)  # another request here
        return user

    monkeypatch.setattr(ModelBackend, "get_user", read_while_something_changes)
    assert queries_of(staff_client)[0] == 200
    monkeypatch.setattr(ModelBackend, "get_user", read_user)

    status, queries = queries_of(staff_client)
    assert status == 200 and queries > 0
    assert queries_of(staff_client) == (200, 0)


def test_an_unreadable_generation_file_means_asking_the_database(
    staff_client: Client, settings: Any, tmp_path: Path
) -> None:
    unreadable = tmp_path / "a-directory"
    unreadable.mkdir()
    settings.THREADSITE_AUTH_GENERATION_FILE = unreadable
    for _ in range(2):
        status, queries = queries_of(staff_client)
        assert status == 200 and queries > 0


def test_an_account_change_that_cannot_be_announced_changes_nothing(
    settings: Any, tmp_path: Path, django_user_model: Any
) -> None:
    settings.THREADSITE_AUTH_GENERATION_FILE = tmp_path / "missing-directory" / "generation"

    with pytest.raises(CommandError, match="Nothing was changed") as refused:
        call_command("adduser", "sam", "--role", "staff", stdout=io.StringIO())

    assert "missing-directory" in str(refused.value)
    assert not django_user_model.objects.filter(username="sam").exists()


# ------------------------------------------------------------------------- sessions


def test_a_warm_session_is_not_read_from_its_file_again(
    staff_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert staff_client.get(THREADS).status_code == 200
    reads = []
    read = SharedFileCache.get
    monkeypatch.setattr(
        SharedFileCache, "get", lambda self, *a, **k: reads.append(a) or read(self, *a, **k)
    )

    assert queries_of(staff_client) == (200, 0)
    assert reads == []


def test_signing_out_elsewhere_ends_the_session_here_at_the_next_request(
    staff_client: Client,
) -> None:
    assert queries_of(staff_client)[0] == 200
    key = staff_client.cookies["sessionid"].value

    SessionStore(key).delete()  # as another process does when this browser signs out

    assert staff_client.get(THREADS).status_code == 302


def test_each_request_gets_its_own_copy_of_the_session(staff_client: Client) -> None:
    assert staff_client.get(THREADS).status_code == 200  # the session is kept from here
    key = staff_client.cookies["sessionid"].value
    first = SessionStore(key)
    first["scribble"] = ["only in this request"]  # changed, never saved

    assert "scribble" not in SessionStore(key).load()
    assert staff_client.get(THREADS).status_code == 200


def test_a_session_removed_behind_djangos_back_ends_within_the_cache_age(
    staff_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.contrib.sessions.models import Session
    from django.core.cache import caches

    assert queries_of(staff_client)[0] == 200
    Session.objects.all().delete()  # no signal, no generation
    caches["sessions"].clear()
    assert staff_client.get(THREADS).status_code == 200  # still known to this process
    later = auth_cache.time.monotonic() + 61
    monkeypatch.setattr(auth_cache.time, "monotonic", lambda: later)

    assert staff_client.get(THREADS).status_code == 302


def test_a_request_reads_the_generation_file_once(
    staff_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session and the user are both checked against it: one read, not two."""
    assert staff_client.get(THREADS).status_code == 200
    reads = []
    read = auth_cache._read_generation_file
    monkeypatch.setattr(auth_cache, "_read_generation_file", lambda: reads.append(1) or read())

    assert queries_of(staff_client) == (200, 0)
    assert reads == [1]
    assert auth_cache.read_generation() is not None and reads == [1, 1]  # outside a request


# ------------------------------------------------------- who a session signs in


def test_a_known_session_signs_its_user_in_without_being_read_again(
    staff_client: Client, staff_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert staff_client.get(THREADS).status_code == 200
    loads: list[str] = []
    load = SessionStore.load
    monkeypatch.setattr(SessionStore, "load", lambda self: loads.append("load") or load(self))
    auth_hash = AbstractBaseUser.get_session_auth_hash
    monkeypatch.setattr(
        AbstractBaseUser,
        "get_session_auth_hash",
        lambda self: loads.append("hash") or auth_hash(self),
    )

    response = staff_client.get(THREADS)

    assert response.status_code == 200
    assert response.wsgi_request.user.pk == staff_user.pk
    assert loads == []
    assert "Cookie" in response["Vary"]  # the page still depends on the session


def test_each_session_signs_in_its_own_user(
    staff_client: Client, staff_user: Any, django_user_model: Any
) -> None:
    viewer = django_user_model.objects.create_user(username="vi", password="x")
    viewer_client = Client()
    viewer_client.force_login(viewer)

    for _ in range(3):
        assert staff_client.get(THREADS).wsgi_request.user.pk == staff_user.pk
        assert viewer_client.get(THREADS).wsgi_request.user.pk == viewer.pk


def test_a_user_signed_in_from_memory_is_a_new_object_each_request(
    staff_client: Client,
) -> None:
    users = [staff_client.get(THREADS).wsgi_request.user for _ in range(3)]

    assert all(user.is_authenticated for user in users)
    assert len({id(user._wrapped) for user in users}) == 3


def test_who_a_session_signs_in_is_kept_no_longer_than_what_it_was_read_from(
    staff_client: Client, staff_user: Any, django_user_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answered late from a session and a user kept for most of the cache age, the
    answer expires with them: a change behind Django's back is still seen in time."""
    assert staff_client.get(THREADS).status_code == 200  # session and user kept from now
    start = auth_cache.time.monotonic()
    auth_cache._signed_in.clear()  # as if this process had not answered for the session
    monkeypatch.setattr(auth_cache.time, "monotonic", lambda: start + 50)
    assert staff_client.get(THREADS).status_code == 200  # answered from what is kept
    django_user_model.objects.filter(pk=staff_user.pk).update(is_active=False)  # no signal

    monkeypatch.setattr(auth_cache.time, "monotonic", lambda: start + 61)

    assert staff_client.get(THREADS).status_code == 302


def test_a_request_without_a_session_reads_no_generation(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    read = auth_cache._read_generation_file
    monkeypatch.setattr(auth_cache, "_read_generation_file", lambda: reads.append(1) or read())

    assert client.get(THREADS).status_code == 302  # to sign in
    assert client.get("/v1/threads").status_code == 401
    assert reads == []


def test_a_generation_file_that_fails_to_close_still_counts_as_read(
    staff_client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert staff_client.get(THREADS).status_code == 200  # the generation file exists
    real_close = os.close
    generation_file = str(settings.THREADSITE_AUTH_GENERATION_FILE)

    def close_then_fail(fd: int) -> None:
        closing = os.readlink(f"/proc/self/fd/{fd}")
        real_close(fd)
        if closing == generation_file:  # the descriptor is gone; the error comes after
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "close", close_then_fail)

    assert auth_cache.read_generation() is not None
    assert staff_client.get(THREADS).status_code == 200
