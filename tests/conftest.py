from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(autouse=True)
def fast_password_hashing(request: pytest.FixtureRequest) -> None:
    """Real password hashing costs most of a second per user; tests need no strength.
    (Skipped where pytest-django is off: the store's tests run without Django.)"""
    if request.config.pluginmanager.hasplugin("django"):
        settings = request.getfixturevalue("settings")
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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
