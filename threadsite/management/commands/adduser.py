"""`python manage.py adduser NAME --role staff|viewer [--password-stdin]`.

Creates the account, or updates an existing one to the given role:
- staff: may post messages, start and cancel runs, edit metadata (is_staff, not a viewer);
- viewer: sees everything and changes nothing (member of the "viewers" group, not staff).

A new account without --password-stdin gets a generated password, printed once. An
existing account keeps its password unless one is given on standard input.
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from threadsite.auth_cache import announcing_account_changes
from threadsite.dashboard.permissions import VIEWERS_GROUP

ROLES = ("staff", "viewer")


class Command(BaseCommand):
    help = (
        "Create an account, or change an existing one, with the role staff (may change "
        "things) or viewer (read only). A new account without --password-stdin gets a "
        "generated password, printed once."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="The account's user name.")
        parser.add_argument(
            "--role",
            required=True,
            choices=ROLES,
            help="staff: may post, start and cancel runs. viewer: read only.",
        )
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from the first line of standard input, instead of "
            "generating one (new accounts) or keeping the current one (existing accounts).",
        )

    def handle(self, *args: Any, username: str, role: str, **options: Any) -> None:
        User = get_user_model()
        username = username.strip()
        try:
            User.username_validator(username)
        except ValidationError as error:
            message = " ".join(error.messages)
            raise CommandError(f"Invalid user name {username!r}: {message}") from None
        max_length = User._meta.get_field(User.USERNAME_FIELD).max_length
        if max_length and len(username) > max_length:
            raise CommandError(f"A user name can be at most {max_length} characters.")

        given = None
        if options["password_stdin"]:
            stdin = options.get("stdin") or sys.stdin
            given = stdin.readline().rstrip("\r\n")
            if not given:
                raise CommandError("No password on standard input (expected one line).")

        with announcing_account_changes(), transaction.atomic():
            user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
            created = user is None
            if user is None:
                user = User(**{User.USERNAME_FIELD: username})
            user.is_active = True
            user.is_staff = role == "staff"
            if role == "viewer":
                user.is_superuser = False  # a superuser could do everything
            generated = None
            if given is not None:
                self._check_password(given, user)
                user.set_password(given)
            elif created or not user.has_usable_password():
                generated = secrets.token_urlsafe(18)
                user.set_password(generated)
            user.save()
            viewers, _ = Group.objects.get_or_create(name=VIEWERS_GROUP)
            if role == "viewer":
                user.groups.add(viewers)
            else:
                user.groups.remove(viewers)

        what = "read-only viewer" if role == "viewer" else "staff"
        verb = "Created" if created else "Updated"
        self.stdout.write(self.style.SUCCESS(f"{verb} {what} account {username!r}."))
        if generated is not None:
            self.stdout.write(f"Its password is: {generated}")
            self.stdout.write("It is shown only this once: keep it somewhere safe.")
        elif given is not None:
            self.stdout.write("Its password was set from standard input.")
        else:
            self.stdout.write("Its password is unchanged.")

    def _check_password(self, password: str, user: Any) -> None:
        try:
            password_validation.validate_password(password, user)
        except ValidationError as error:
            raise CommandError("Password refused: " + " ".join(error.messages)) from None
