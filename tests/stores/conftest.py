"""Fixtures for the `stores` guarantee tests. Plain pytest: nothing here needs Django."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]

# `stores` lives at the repository root, and the helper modules used by worker processes
# (stores_testkit) live next to this file: make both importable however pytest is run.
for entry in (str(REPO_ROOT), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from stores import ThreadStore  # noqa: E402

# No test in this directory may take longer than this; a hang (a lock never released,
# a worker that never returns) fails the test instead of stalling the suite.
TEST_TIMEOUT_SECONDS = 120


@pytest.fixture
def time_limit_seconds() -> float:
    return TEST_TIMEOUT_SECONDS


@pytest.fixture
def threadsite_store_root(tmp_path: Path) -> Path:
    """Shadows the Django-settings fixture of the same name in tests/conftest.py: the
    store tests run without Django (pytest -p no:django) and build their own stores."""
    return tmp_path / "threads"


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_root: Path) -> ThreadStore:
    return ThreadStore(store_root)
