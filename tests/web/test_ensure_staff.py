from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db

CREATED = re.compile(r"^Created staff account 'admin' with password: (\S+)$", re.MULTILINE)


def run_ensure_staff(*args: str) -> str:
    out = StringIO()
    call_command("ensure_staff", *args, stdout=out, no_color=True)
    return out.getvalue()


def test_creates_one_staff_account_and_prints_its_password_once():
    output = run_ensure_staff()

    passwords = CREATED.findall(output)
    assert len(passwords) == 1
    assert output.count(passwords[0]) == 1
    (user,) = get_user_model().objects.all()
    assert user.username == "admin"
    assert user.is_staff and user.is_active
    assert not user.is_superuser
    assert user.check_password(passwords[0])
    assert len(passwords[0]) >= 20


def test_does_nothing_when_a_staff_account_exists():
    first = run_ensure_staff()
    password = CREATED.findall(first)[0]

    second = run_ensure_staff()

    assert second == ""
    assert get_user_model().objects.count() == 1
    assert password not in second


def test_an_inactive_staff_account_does_not_count(django_user_model):
    django_user_model.objects.create_user("old", is_staff=True, is_active=False)

    output = run_ensure_staff()

    assert CREATED.search(output)
    assert django_user_model.objects.filter(is_staff=True, is_active=True).count() == 1


def test_refuses_to_touch_an_existing_non_staff_admin(django_user_model):
    django_user_model.objects.create_user("admin", password="unchanged-password")

    with pytest.raises(CommandError, match="--username"):
        run_ensure_staff()

    admin = django_user_model.objects.get(username="admin")
    assert not admin.is_staff
    assert admin.check_password("unchanged-password")


def test_username_can_be_chosen(django_user_model):
    output = run_ensure_staff("--username", "operator")

    assert "Created staff account 'operator' with password: " in output
    assert django_user_model.objects.get(username="operator").is_staff
