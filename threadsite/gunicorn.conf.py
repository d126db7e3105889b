"""gunicorn settings for Threadsite: `gunicorn --config threadsite/gunicorn.conf.py`.

gthread workers keep the dashboard answering while some threads hold long-lived
responses (server-sent events); gunicorn's own environment variables still apply
(e.g. FORWARDED_ALLOW_IPS for a proxy on another host).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

wsgi_app = "threadsite.wsgi:application"


def _int_from_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {value!r}.") from None
    if number < 1:
        raise SystemExit(f"{name} must be at least 1, got {number}.")
    return number


# `serve --host/--port` passes --bind, which overrides this.
bind = [os.environ.get("THREADSITE_BIND", "").strip() or f"127.0.0.1:{_int_from_env('PORT', 8000)}"]

worker_class = "gthread"
workers = _int_from_env("WEB_CONCURRENCY", 2)
threads = _int_from_env("GUNICORN_THREADS", 16)
# The API's event streams each hold a thread for as long as their run lasts, so a process
# serves at most half its threads' worth of them (THREADSITE_API_MAX_STREAMS overrides);
# the other half always answers the dashboard and the rest of the API.
raw_env = [f"THREADSITE_WEB_THREADS={threads}"]

# Seconds a worker may go silent before it is restarted. With gthread, this is the
# worker's heartbeat, not a limit on how long one request may take.
timeout = 30
graceful_timeout = 10
keepalive = 5

accesslog = "-"
errorlog = "-"
# %(p)s, the worker's process ID, tells which of the processes answered.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms %(p)s'

# No gunicornc control socket: its default path is per user, not per site, so two
# instances (a test server beside `make run`) would take it from each other.
control_socket_disable = True


def post_worker_init(worker: Any) -> None:
    """Bring the store's catalog into the new worker in the background: its first thread
    list would otherwise replay the whole journal while the request waits (seconds for
    100,000 threads), and hold up every other thread list meanwhile."""

    def load() -> None:
        from threadsite.services import get_store

        started = time.monotonic()
        try:
            threads = len(get_store().catalog().threads)
        except Exception:
            # The first request that needs the catalog tries again, and says what is wrong.
            worker.log.exception("Could not load the store's catalog ahead of requests")
            return
        took = time.monotonic() - started
        worker.log.info("Catalog of %d threads loaded in %.1f s", threads, took)

    threading.Thread(target=load, name="catalog-preload", daemon=True).start()
