"""At start, the web server and the run worker check that the store directory takes
durable writes and that its file locks exclude another process; a filesystem that
ignores locks is refused with a clear message instead of being corrupted."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from reliability_testkit import REPO_ROOT, clean_env, free_port, prepare_data_dir

from stores import StoreError, ThreadStore, check_store_directory
from stores.preflight import StoreDirectoryUnusable

NOBODY = 65534


def ignore_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's locks are granted at once, whoever holds them: a filesystem that
    ignores flock, seen from here (the helper process still takes its lock for real)."""
    monkeypatch.setattr(fcntl, "flock", lambda fd, operation: None)


def test_a_good_directory_passes_and_is_left_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    check_store_directory(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_locks_that_do_not_exclude_another_process_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ignore_locks(monkeypatch)
    with pytest.raises(StoreDirectoryUnusable) as refused:
        check_store_directory(tmp_path)
    assert isinstance(refused.value, StoreError)
    message = str(refused.value)
    assert str(tmp_path) in message
    assert "do not exclude another process" in message
    assert "corrupt" in message
    assert list(tmp_path.iterdir()) == []


def test_a_filesystem_that_refuses_locks_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(StoreDirectoryUnusable, match="file lock"):
        check_store_directory(tmp_path)


# Root writes anywhere, so these run as nobody, on root's directories. The interpreter
# may be out of nobody's reach: everything is imported first, then privileges dropped.
DROP_PRIVILEGES = f"""
import os
os.setgroups([])
os.setgid({NOBODY})
os.setuid({NOBODY})
"""


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory of root's that nobody can reach (pytest's own are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="threadsite-preflight-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def run_as_nobody(code: str, *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.skip("needs root, to run a check as another user")
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_a_directory_this_user_cannot_write_is_refused(public_dir: Path) -> None:
    target = public_dir / "store"
    target.mkdir(mode=0o755)
    code = (
        "import sys\nfrom stores import StoreError, check_store_directory\n"
        + DROP_PRIVILEGES
        + f"try:\n    check_store_directory({str(target)!r})\n"
        "except StoreError as error:\n    print(error)\n    sys.exit(1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    result = run_as_nobody(code, env=env, cwd=target)
    assert result.returncode == 1, result.stderr
    assert "cannot be used: creating a file there failed" in result.stdout
    assert "must be writable" in result.stdout


def test_the_run_worker_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, threadsite_store_root: Path
) -> None:
    ignore_locks(monkeypatch)
    with pytest.raises(CommandError) as refused:
        call_command("runworker")
    assert str(refused.value).startswith("The run worker cannot start: The store directory")
    assert "do not exclude another process" in str(refused.value)


def test_the_run_worker_refuses_an_unwritable_store(public_dir: Path) -> None:
    data_dir = public_dir / "data"
    ThreadStore(data_dir / "threads")  # made by root: nobody may not write there
    for path in (data_dir, data_dir / "threads"):
        path.chmod(0o755)
    code = (
        "import django, os\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'threadsite.settings'\n"
        "django.setup()\n"
        "from django.core.management import execute_from_command_line\n"
        "import threadsite.management.commands.runworker\n"
        + DROP_PRIVILEGES
        + "execute_from_command_line(['manage.py', 'runworker'])\n"
    )
    result = run_as_nobody(code, env=clean_env(data_dir), cwd=REPO_ROOT)
    assert result.returncode == 1, result.stderr
    assert "The run worker cannot start: The store directory" in result.stderr
    assert "must be writable" in result.stderr


def test_gunicorn_refuses_to_serve_a_store_whose_locks_do_not_hold(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    prepare_data_dir(data_dir)
    argv = [
        sys.executable, "-m", "gunicorn", "--config", "threadsite/gunicorn.conf.py",
        "--pythonpath", str(Path(__file__).parent), "lockless_wsgi:application",
    ]  # fmt: skip
    result = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=clean_env(data_dir, PORT=str(free_port()), WEB_CONCURRENCY="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3, output  # gunicorn: "Worker failed to boot"
    assert "Threadsite cannot start: The store directory" in output
    assert "do not exclude another process" in output
