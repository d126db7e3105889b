"""Fixtures for the reliability and security suites (README, "Operating Threadsite";
docs/reliability.md). The helpers are in reliability_testkit.py.

Every process a test starts is stopped at teardown, every wait is bounded, and every
test has a hard time limit, so a hang fails a test instead of stalling the suite.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the helper modules beside this file (--import-mode=importlib)
    sys.path.insert(0, str(HERE))

from reliability_testkit import TORTURE, Site, running_site  # noqa: E402

# No test here may take longer than this (make torture: much longer counts).
TEST_TIMEOUT_SECONDS = 1800 if TORTURE else 150

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


@pytest.fixture
def time_limit_seconds() -> float:
    return TEST_TIMEOUT_SECONDS


@pytest.fixture(scope="session")
def prod_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One production-like site for the suites that do not kill it: gunicorn (2
    processes, 8 threads each, DEBUG off, HTTPS behind a proxy), no run worker."""
    with running_site(tmp_path_factory.mktemp("prod-site"), threads=8) as site:
        yield site


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not CHROMIUM.exists():
        pytest.fail(f"The browser tests need Chromium at {CHROMIUM}: apt-get install chromium")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}
