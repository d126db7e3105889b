"""WSGI entry point, served by gunicorn (see threadsite/gunicorn.conf.py)."""

from __future__ import annotations

import os
import sys

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "threadsite.settings")

application = get_wsgi_application()


def _check_store_or_exit() -> None:
    """Refuse to serve from a store directory that cannot be written or whose file locks
    do not exclude other processes (stores/preflight.py). Runs once per server process;
    exit status 3 makes gunicorn stop ("Worker failed to boot") instead of respawning."""
    from stores import StoreError, check_store_directory
    from threadsite.services import get_store

    try:
        check_store_directory(get_store().root)
    except StoreError as error:
        print(f"Threadsite cannot start: {error}", file=sys.stderr, flush=True)
        sys.exit(3)


_check_store_or_exit()
