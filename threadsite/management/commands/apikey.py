"""`python manage.py apikey create NAME | list | revoke NAME`: the API's bearer keys.

`create` prints the new key once; the keys file keeps only its SHA-256 hash. `revoke`
takes effect at the next request every server process gets. Keys set in
THREADSITE_API_KEYS are listed by position and revoked by removing them from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from threadsite.api import auth


class Command(BaseCommand):
    help = "Create, list or revoke the bearer keys of the /v1 API."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        create = actions.add_parser("create", help="Create a key and print it, once.")
        create.add_argument("name", help="What the key is for, e.g. billing-bot.")
        actions.add_parser("list", help="List the keys by name (never the keys).")
        revoke = actions.add_parser("revoke", help="Stop accepting a key, at once.")
        revoke.add_argument("name", help="The name the key was created with.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        path = Path(settings.THREADSITE_API_KEYS_FILE)
        try:
            if action == "create":
                self._create(path, options["name"])
            elif action == "revoke":
                self._revoke(path, options["name"])
            else:
                self._list(path)
        except OSError as error:
            raise CommandError(f"Cannot use the keys file {path}: {error.strerror}") from None

    def _create(self, path: Path, name: str) -> None:
        try:
            key = auth.create_key(path, name)
        except ValueError as error:
            raise CommandError(str(error)) from None
        except auth.KeyNameTaken:
            raise CommandError(
                f"A key named {name!r} exists already: revoke it first, or pick another name."
            ) from None
        self.stdout.write(self.style.SUCCESS(f"Created API key {name!r}:"))
        self.stdout.write(key)
        self.stdout.write("It is shown only this once: keep it somewhere safe.")

    def _revoke(self, path: Path, name: str) -> None:
        if not auth.revoke_key(path, name):
            raise CommandError(f"No API key named {name!r} in {path}.")
        self.stdout.write(self.style.SUCCESS(f"Revoked API key {name!r}."))

    def _list(self, path: Path) -> None:
        keys = auth.read_keys(path)
        for key in keys:
            self.stdout.write(
                f"{key.name}\tcreated {key.created_at or '?'}\tsha256 {key.fingerprint}…"
            )
        from_env = len(settings.THREADSITE_API_KEYS)
        if from_env:
            self.stdout.write(f"and {from_env} key(s) from THREADSITE_API_KEYS")
        if not keys and not from_env:
            self.stdout.write("No API keys: create one with 'manage.py apikey create NAME'.")
