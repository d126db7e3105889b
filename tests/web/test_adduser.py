"""`manage.py adduser NAME --role staff|viewer [--password-stdin]`."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from threadsite.dashboard.permissions import can_write

pytestmark = pytest.mark.django_db

GOOD_PASSWORD = "paper lantern orbit 42"


def adduser(*args: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    options = {"stdout": out}
    if stdin is not None:
        options["stdin"] = io.StringIO(stdin)
    call_command("adduser", *args, **options)
    return out.getvalue()


def generated_password(output: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith("Its password is: ")]
    return line.removeprefix("Its password is: ")


def test_a_new_staff_account_gets_a_printed_password_that_works():
    output = adduser("sam", "--role", "staff")

    assert "Created staff account 'sam'." in output
    assert "shown only this once" in output
    password = generated_password(output)
    assert len(password) >= 20
    user = get_user_model().objects.get(username="sam")
    assert user.is_staff and user.is_active and not user.is_superuser
    assert not user.groups.filter(name="viewers").exists()
    assert can_write(user)
    client = Client()
    response = client.post(reverse("login"), {"username": "sam", "password": password})
    assert response.status_code == 302


def test_a_new_viewer_is_read_only():
    output = adduser("vic", "--role", "viewer")

    assert "Created read-only viewer account 'vic'." in output
    user = get_user_model().objects.get(username="vic")
    assert not user.is_staff
    assert user.groups.filter(name="viewers").exists()
    assert not can_write(user)
    assert user.check_password(generated_password(output))


def test_the_password_can_come_from_stdin():
    output = adduser("sam", "--role", "staff", "--password-stdin", stdin=GOOD_PASSWORD + "\n")

    assert "Its password is:" not in output
    assert GOOD_PASSWORD not in output
    assert "set from standard input" in output
    assert get_user_model().objects.get(username="sam").check_password(GOOD_PASSWORD)


@pytest.mark.parametrize(("stdin", "error"), [("", "No password"), ("123\n", "Password refused")])
def test_empty_or_weak_passwords_are_refused(stdin, error):
    with pytest.raises(CommandError, match=error):
        adduser("sam", "--role", "staff", "--password-stdin", stdin=stdin)

    assert not get_user_model().objects.filter(username="sam").exists()


def test_changing_the_role_keeps_the_password():
    password = generated_password(adduser("sam", "--role", "staff"))

    output = adduser("sam", "--role", "viewer")

    assert "Updated read-only viewer account 'sam'." in output
    assert "Its password is unchanged." in output
    user = get_user_model().objects.get(username="sam")
    assert user.check_password(password)
    assert not can_write(user)

    adduser("sam", "--role", "staff")
    user.refresh_from_db()
    assert can_write(user)
    assert not user.groups.filter(name="viewers").exists()


def test_updating_reactivates_and_demotes_a_superuser_made_viewer():
    User = get_user_model()
    User.objects.create_superuser("root", password=GOOD_PASSWORD, is_active=False)

    adduser("root", "--role", "viewer")

    user = User.objects.get(username="root")
    assert user.is_active
    assert not user.is_staff and not user.is_superuser
    assert not can_write(user)


def test_an_existing_account_can_get_a_new_password_from_stdin():
    adduser("sam", "--role", "staff")

    adduser("sam", "--role", "staff", "--password-stdin", stdin=GOOD_PASSWORD)

    assert get_user_model().objects.get(username="sam").check_password(GOOD_PASSWORD)


@pytest.mark.parametrize("name", ["bad name", "x" * 151, "a/b"])
def test_invalid_user_names_are_refused(name):
    with pytest.raises(CommandError):
        adduser(name, "--role", "staff")


def test_the_role_is_required_and_checked():
    with pytest.raises(CommandError):
        adduser("sam")
    with pytest.raises(CommandError):
        adduser("sam", "--role", "admin")
