from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction


class Command(BaseCommand):
    help = (
        "Create a staff account with a generated password if no active staff account "
        "exists. The password is printed once and never stored in clear."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="Name of the account to create.")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        User = get_user_model()
        with transaction.atomic():
            if User.objects.filter(is_staff=True, is_active=True).exists():
                if options["verbosity"] >= 2:
                    self.stdout.write("An active staff account exists; nothing to do.")
                return
            if User.objects.filter(username=username).exists():
                raise CommandError(
                    f"No active staff account exists, and an account named {username!r} already "
                    "does. Make it staff, or pass --username to create another one."
                )
            password = secrets.token_urlsafe(18)
            User.objects.create_user(username=username, password=password, is_staff=True)
        self.stdout.write(
            self.style.SUCCESS(f"Created staff account {username!r} with password: {password}")
        )
        self.stdout.write("It is shown only this once: keep it somewhere safe.")
