"""Fixtures for the API tests: real gunicorn and a real run worker over one temporary data
directory (started once for the module that asks), the official `openai` client pointed
at them, and in-process settings for the tests that use Django's test client.

Every wait is bounded and every test has a time limit, so a hang fails a test instead
of stalling the suite; both processes are stopped at teardown.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the helper module beside this file (--import-mode=importlib)
    sys.path.insert(0, str(HERE))

from api_testkit import (  # noqa: E402
    API_KEY,
    REPO_ROOT,
    LiveApi,
    free_port,
    server_env,
    stop,
    wait_until_serving,
)

from threadsite import services  # noqa: E402

TEST_TIMEOUT_SECONDS = 30


@pytest.fixture
def time_limit_seconds() -> float:
    return TEST_TIMEOUT_SECONDS


@pytest.fixture(autouse=True)
def api_settings(settings, tmp_path: Path) -> Iterator[Any]:
    """In-process requests: a key, assistants and keys file of this test's own."""
    settings.THREADSITE_API_KEYS = [API_KEY]
    settings.THREADSITE_API_KEYS_FILE = tmp_path / "api_keys"
    settings.THREADSITE_ASSISTANTS_ROOT = tmp_path / "assistants"
    services.clear_store_cache()
    yield settings
    services.clear_store_cache()


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """gunicorn (one process, 6 threads: 3 for streams) and a run worker with the echo
    model typing a word every 50 ms, sharing one data directory."""
    root = tmp_path_factory.mktemp("live-api")
    data_dir = root / "data"
    log = root / "processes.log"
    port = free_port()
    with log.open("w") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "threadsite/gunicorn.conf.py"],
            cwd=REPO_ROOT,
            env=server_env(
                data_dir,
                PORT=str(port),
                WEB_CONCURRENCY="1",
                GUNICORN_THREADS="6",
                THREADSITE_API_KEYS=API_KEY,
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "runworker"],
            cwd=REPO_ROOT,
            env=server_env(
                data_dir,
                THREADSITE_ECHO_DELAY="0.05",
                THREADSITE_WORKER_CONCURRENCY="8",
                THREADSITE_WORKER_SHUTDOWN_SECONDS="0",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        api = LiveApi(base_url=base_url, data_dir=data_dir)
        wait_until_serving(base_url, api.store, [web, worker], log)
        yield api
    finally:
        stop(worker)
        stop(web)


@pytest.fixture
def api(live_api: LiveApi) -> openai.OpenAI:
    """The official client, as an application would configure it but for `base_url`."""
    return openai.OpenAI(base_url=f"{live_api.base_url}/v1", api_key=API_KEY, timeout=20)
