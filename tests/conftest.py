from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stores import ThreadStore
from threadsite import services

# Playwright's sync API runs an event loop in the test thread; Django would otherwise
# refuse database access from it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def threadsite_store_root(settings, tmp_path: Path) -> Iterator[Path]:
    """Every test gets its own empty thread store (names kept unique to this conftest)."""
    root = tmp_path / "threads"
    settings.THREADSITE_STORE_ROOT = root
    services.clear_store_cache()
    yield root
    services.clear_store_cache()


@pytest.fixture
def time_limit_seconds() -> float | None:
    """Seconds one test may take before it fails; a folder's conftest sets its own."""
    return None


@pytest.fixture(autouse=True)
def _bounded_time(time_limit_seconds: float | None) -> Iterator[None]:
    """Fail a test that runs past its limit (a hang, a lost signal) instead of stalling
    the suite. SIGALRM reaches only the main thread, so other threads are left alone."""
    if time_limit_seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"test exceeded {time_limit_seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, time_limit_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def fast_password_hashing(request: pytest.FixtureRequest) -> None:
    """Real password hashing costs most of a second per user; tests need no strength.
    (Skipped where pytest-django is off: the store's tests run without Django.)"""
    if request.config.pluginmanager.hasplugin("django"):
        settings = request.getfixturevalue("settings")
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def process_caches(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """Each test starts with this process's caches empty: its own session files and
    account generation file, no users cached from an earlier test, no live blocks, no
    kept messages."""
    if not request.config.pluginmanager.hasplugin("django"):
        yield
        return
    from threadsite import auth_cache
    from threadsite.dashboard.runs import live_blocks
    from threadsite.dashboard.threads import kept_messages

    settings = request.getfixturevalue("settings")
    settings.THREADSITE_AUTH_GENERATION_FILE = tmp_path / "auth-generation"
    settings.CACHES = {
        **settings.CACHES,
        "sessions": {**settings.CACHES["sessions"], "LOCATION": tmp_path / "sessions"},
    }
    auth_cache.forget_all()
    live_blocks.clear()
    kept_messages.clear()
    yield
    auth_cache.forget_all()
    live_blocks.clear()
    kept_messages.clear()


@pytest.fixture
def thread_store(threadsite_store_root: Path) -> ThreadStore:
    return services.get_store()


@pytest.fixture
def password() -> str:
    return "correct horse battery staple"


@pytest.fixture
def staff_user(django_user_model, password: str):
    return django_user_model.objects.create_user(username="ada", password=password, is_staff=True)


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def stats_settle_fast(monkeypatch: pytest.MonkeyPatch) -> float:
    """The store vouches for files left unchanged for 0.2 s, not 1 s (run_version,
    messages_version). Returns how long to wait for files to settle."""
    from stores import thread_store as thread_store_module

    monkeypatch.setattr(thread_store_module, "STAT_SETTLED_SECONDS", 0.2)
    return 0.25


@pytest.fixture
def store_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[tuple[Any, ...]]]:
    """store_calls("run_view") records, from then on, the arguments of every call of that
    ThreadStore method (by any store object), and returns the list it records into."""

    def watch(name: str) -> list[tuple[Any, ...]]:
        calls: list[tuple[Any, ...]] = []
        real = getattr(ThreadStore, name)

        def recording(store: ThreadStore, *args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            return real(store, *args, **kwargs)

        monkeypatch.setattr(ThreadStore, name, recording)
        return calls

    return watch
