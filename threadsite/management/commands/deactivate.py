"""`python manage.py deactivate NAME`: the account can no longer sign in, and every
browser signed in with it is signed out at its next request, in every server process.

`adduser NAME --role ...` enables it again (with its old password, or a new one).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from threadsite.auth_cache import announcing_account_changes


class Command(BaseCommand):
    help = (
        "Deactivate an account: it cannot sign in, and its open sessions end at their next "
        "request. `adduser NAME --role ...` enables it again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="The account's user name.")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        User = get_user_model()
        with announcing_account_changes(), transaction.atomic():
            user = User.objects.filter(**{User.USERNAME_FIELD: username.strip()}).first()
            if user is None:
                raise CommandError(f"There is no account named {username.strip()!r}.")
            if not user.is_active:
                self.stdout.write(f"Account {user.get_username()!r} was already deactivated.")
                return
            user.is_active = False
            user.save(update_fields=["is_active"])
        self.stdout.write(
            self.style.SUCCESS(
                f"Deactivated account {user.get_username()!r}: it is signed out everywhere "
                "at its next request."
            )
        )
