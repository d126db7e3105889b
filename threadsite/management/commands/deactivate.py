"""`python manage.py deactivate NAME`: the account can no longer sign in, and every
browser signed in with it is signed out at its next request, in every server process.
Its sessions are deleted too, so that enabling the account again later does not bring
back a session (or a copy of its cookie) from before.

`adduser NAME --role ...` enables it again (with its old password, or a new one).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.models import Session
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from threadsite.auth_cache import SessionStore, announcing_account_changes


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
            was_active = user.is_active
            user.is_active = False
            user.save(update_fields=["is_active"])
        ended = end_sessions_of(user.pk)
        if not was_active:
            self.stdout.write(f"Account {user.get_username()!r} was already deactivated.")
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Deactivated account {user.get_username()!r}: it is signed out "
                    "everywhere at its next request."
                )
            )
        if ended:
            self.stdout.write(f"Ended {ended} session(s).")


def end_sessions_of(user_id: Any) -> int:
    """Delete every session signed in as `user_id` (from the database, the shared files
    and every process's memory); returns how many."""
    ended = 0
    for session in Session.objects.all().iterator():
        store = SessionStore(session.session_key)
        if store.decode(session.session_data).get(SESSION_KEY) == str(user_id):
            store.delete()
            ended += 1
    return ended
