from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from threadsite import env

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("YES", True), ("off", False), ("0", False), ("", False)],
)
def test_booleans(raw, expected):
    assert env.get_bool("DJANGO_DEBUG", default=False, environ={"DJANGO_DEBUG": raw}) is expected


def test_a_bad_boolean_names_the_variable_and_the_value():
    with pytest.raises(ImproperlyConfigured, match=r"DJANGO_DEBUG must be true or false.*'maybe'"):
        env.get_bool("DJANGO_DEBUG", default=False, environ={"DJANGO_DEBUG": "maybe"})


def test_lists_are_comma_separated_and_trimmed():
    environ = {"DJANGO_ALLOWED_HOSTS": " example.com , .example.org ,"}

    hosts = env.get_list("DJANGO_ALLOWED_HOSTS", default=["localhost"], environ=environ)

    assert hosts == ["example.com", ".example.org"]
    assert env.get_list("DJANGO_ALLOWED_HOSTS", default=["localhost"], environ={}) == ["localhost"]


def test_a_list_of_only_commas_is_an_error():
    with pytest.raises(ImproperlyConfigured, match="DJANGO_ALLOWED_HOSTS"):
        env.get_list("DJANGO_ALLOWED_HOSTS", default=[], environ={"DJANGO_ALLOWED_HOSTS": ", ,"})


def test_relative_paths_are_taken_from_the_base_dir(tmp_path: Path):
    path = env.get_path(
        "THREADSITE_DATA_DIR",
        default=Path("var"),
        base_dir=tmp_path,
        environ={"THREADSITE_DATA_DIR": "data/here"},
    )
    assert path == tmp_path / "data" / "here"
    assert env.get_path("X", default=Path("var"), base_dir=tmp_path, environ={}) == tmp_path / "var"


def test_a_data_dir_that_is_a_file_is_an_error(tmp_path: Path):
    (tmp_path / "file").write_text("")

    with pytest.raises(ImproperlyConfigured, match="THREADSITE_DATA_DIR must name a directory"):
        env.get_path(
            "THREADSITE_DATA_DIR",
            default=Path("var"),
            base_dir=tmp_path,
            environ={"THREADSITE_DATA_DIR": "file"},
        )


def test_the_secret_key_is_generated_once_and_kept_private(tmp_path: Path):
    path = tmp_path / "secret_key"

    first = env.load_or_create_secret_key(path)
    second = env.load_or_create_secret_key(path)

    assert first == second
    assert len(first) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_an_empty_secret_key_file_is_an_error(tmp_path: Path):
    path = tmp_path / "secret_key"
    path.write_text("\n")

    with pytest.raises(ImproperlyConfigured, match="is empty"):
        env.load_or_create_secret_key(path)


def load_settings(tmp_path: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    """Import the settings module in a fresh interpreter with only the given variables."""
    script = (
        "import json, threadsite.settings as s; print(json.dumps({"
        "'data': str(s.DATA_DIR), 'store': str(s.THREADSITE_STORE_ROOT),"
        "'db': str(s.DATABASES['default']['NAME']), 'debug': s.DEBUG,"
        "'hosts': s.ALLOWED_HOSTS, 'key': s.SECRET_KEY}))"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_settings_defaults_are_safe_and_keep_data_in_the_data_dir(tmp_path: Path):
    data = tmp_path / "data"

    result = load_settings(tmp_path, THREADSITE_DATA_DIR=str(data))

    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["data"] == str(data)
    assert values["store"] == str(data / "threads")
    assert values["db"] == str(data / "auth.sqlite3")
    assert values["debug"] is False
    assert values["hosts"] == ["127.0.0.1", "localhost"]
    assert values["key"] == (data / "secret_key").read_text().strip()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_a_given_secret_key_wins_and_no_key_file_is_written(tmp_path: Path):
    data = tmp_path / "data"

    result = load_settings(tmp_path, THREADSITE_DATA_DIR=str(data), DJANGO_SECRET_KEY="s" * 60)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["key"] == "s" * 60
    assert not (data / "secret_key").exists()


def test_an_invalid_setting_stops_startup_with_a_clear_message(tmp_path: Path):
    result = load_settings(tmp_path, THREADSITE_DATA_DIR=str(tmp_path), DJANGO_DEBUG="sometimes")

    assert result.returncode != 0
    assert "DJANGO_DEBUG must be true or false" in result.stderr


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_live_blocks_must_be_a_whole_number(tmp_path: Path, value: str):
    environ = {"THREADSITE_DATA_DIR": str(tmp_path), "THREADSITE_LIVE_BLOCKS": value}
    result = load_settings(tmp_path, **environ)

    assert result.returncode != 0
    assert f"THREADSITE_LIVE_BLOCKS must be a whole number of at least 0, got {value!r}" in (
        result.stderr
    )


def test_manage_py_reports_a_bad_setting_without_a_traceback(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={"PATH": os.environ["PATH"], "THREADSITE_DATA_DIR": str(tmp_path), "DJANGO_DEBUG": "?"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.startswith("Configuration error: DJANGO_DEBUG must be true or false")
    assert "Traceback" not in result.stderr


def test_live_blocks_setting_reaches_the_run_pages(tmp_path: Path):
    script = (
        "import django; django.setup(); "
        "from threadsite.dashboard.runs import live_blocks; print(live_blocks.size)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "threadsite.settings",
            "THREADSITE_DATA_DIR": str(tmp_path),
            "THREADSITE_LIVE_BLOCKS": "0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
