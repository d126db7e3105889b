"""`python manage.py changepassword NAME`: Django's, which first makes sure the running
servers can be told. A new password signs the account's other sessions out at their next
request in every server process, through the generation file (threadsite/auth_cache.py);
when that file cannot be written, the command says so before asking for a password,
instead of changing it and failing with a traceback."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.management.commands import changepassword
from django.core.management.base import CommandError

from threadsite.auth_cache import announcing_account_changes, new_generation


class Command(changepassword.Command):
    def handle(self, *args: Any, **options: Any) -> str:
        with announcing_account_changes():
            new_generation()  # harmless: the servers only read their accounts again
        try:
            return str(super().handle(*args, **options))
        except OSError as error:  # the file went away while the password was typed
            raise CommandError(
                f"The password was changed, but the running servers could not be told, "
                f"because {settings.THREADSITE_AUTH_GENERATION_FILE} could not be written "
                f"({error.strerror or error}): the account's other sessions end within "
                f"{settings.THREADSITE_AUTH_CACHE_SECONDS} s instead of at their next request."
            ) from None
