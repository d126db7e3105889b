"""`manage.py changepassword NAME`: Django's prompts, and every server told at once."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from threadsite.management.commands import changepassword

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "quiet harbour lamp 58"


def answering(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Type `answers` at the password prompts; returns the prompts shown."""
    prompts: list[str] = []
    typed = iter(answers)

    def get_pass(self: Any, prompt: str = "Password: ") -> str:
        prompts.append(prompt)
        return next(typed)

    monkeypatch.setattr(changepassword.Command, "_get_pass", get_pass)
    return prompts


def test_a_new_password_works_and_signs_the_other_sessions_out(
    staff_client: Client, staff_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert staff_client.get("/threads/").status_code == 200
    answering(monkeypatch, NEW_PASSWORD, NEW_PASSWORD)
    out = io.StringIO()

    call_command("changepassword", staff_user.username, stdout=out)

    assert "Password changed successfully" in out.getvalue()
    staff_user.refresh_from_db()
    assert staff_user.check_password(NEW_PASSWORD)
    assert staff_client.get("/threads/").status_code == 302  # to sign in again


def test_when_the_servers_cannot_be_told_nothing_is_asked_or_changed(
    staff_user: Any, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.THREADSITE_AUTH_GENERATION_FILE = tmp_path / "missing-directory" / "generation"
    prompts = answering(monkeypatch, NEW_PASSWORD, NEW_PASSWORD)

    with pytest.raises(CommandError, match="Nothing was changed") as refused:
        call_command("changepassword", staff_user.username, stdout=io.StringIO())

    assert "missing-directory" in str(refused.value)
    assert prompts == []
    staff_user.refresh_from_db()
    assert not staff_user.check_password(NEW_PASSWORD)


def test_a_file_gone_while_the_password_is_typed_is_reported_plainly(
    staff_user: Any, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.THREADSITE_AUTH_GENERATION_FILE = tmp_path / "data" / "generation"
    settings.THREADSITE_AUTH_GENERATION_FILE.parent.mkdir()
    typed = iter([NEW_PASSWORD, NEW_PASSWORD])

    def type_while_the_directory_goes(self: Any, prompt: str = "Password: ") -> str:
        settings.THREADSITE_AUTH_GENERATION_FILE = tmp_path / "gone" / "generation"
        return next(typed)

    monkeypatch.setattr(changepassword.Command, "_get_pass", type_while_the_directory_goes)

    with pytest.raises(CommandError, match="The password was changed, but") as reported:
        call_command("changepassword", staff_user.username, stdout=io.StringIO())

    assert "within 60 s" in str(reported.value)
    staff_user.refresh_from_db()
    assert staff_user.check_password(NEW_PASSWORD)
