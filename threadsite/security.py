"""Security headers for every response, and a limit on sign-in attempts.

Content-Security-Policy: Django 5.2 has none built in, so one small middleware sets it.
The pages load only our own scripts and styles (htmx from django-htmx, live.js, the
stylesheets) and no inline ones: base.html tells htmx not to inject its indicator
<style> and never to eval.

Sign-in attempts: at most THREADSITE_LOGIN_MAX_ATTEMPTS attempts that do not succeed,
per username and client address, in THREADSITE_LOGIN_WINDOW_SECONDS; the next one gets
a 429 page until the oldest counted attempt leaves the window. A successful sign-in
clears the count; a post that never reached the password check (a missing CSRF token,
an empty field) is not counted. The counts live in Django's file-based cache under the data
directory (CACHES["login_attempts"]), so every gunicorn process, and every host that
shares the data directory, counts together; a per-process memory cache would give each
process its own allowance. Each attempt is counted under a file lock before the
password is checked (and given back if no password was checked), so even simultaneous
attempts cannot get past the limit.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import caches
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import reverse

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
LOGIN_CACHE = "login_attempts"
_REQUEST_KEY = "_threadsite_login_key"
_REQUEST_CHECKED = "_threadsite_login_checked"


class ContentSecurityPolicyMiddleware:
    """Adds the Content-Security-Policy header to every response that has none."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response


# ---------------------------------------------------------------- sign-in attempts


def attempts_key(username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username.strip().casefold()}\n{address}".encode()).hexdigest()
    return f"login:{digest}"


def _client_address(request: HttpRequest) -> str:
    # REMOTE_ADDR as gunicorn saw it: behind a proxy, the proxy's address (see README).
    return str(request.META.get("REMOTE_ADDR", ""))


_thread_lock = threading.Lock()


@contextmanager
def _counting() -> Iterator[Any]:
    """The attempts cache, held exclusively across threads and processes."""
    cache = caches[LOGIN_CACHE]
    location = Path(settings.CACHES[LOGIN_CACHE]["LOCATION"])
    location.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _thread_lock:
        fd = os.open(location / "counts.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield cache
        finally:
            os.close(fd)


def _window() -> float:
    return float(settings.THREADSITE_LOGIN_WINDOW_SECONDS)


def take_attempt(key: str, *, now: float | None = None) -> float:
    """Count one sign-in attempt for `key` at `now`. Returns 0 if it may go ahead, else
    the seconds until it may (the attempt is then not counted)."""
    now = time.time() if now is None else now
    window = _window()
    with _counting() as cache:
        recent = [at for at in cache.get(key, []) if now - at < window]
        if len(recent) >= settings.THREADSITE_LOGIN_MAX_ATTEMPTS:
            return max(1.0, recent[0] + window - now)
        recent.append(now)
        cache.set(key, recent, timeout=math.ceil(window))
    return 0.0


def give_back_attempt(key: str, at: float) -> None:
    """Uncount the attempt taken at `at`: no password was checked after all."""
    with _counting() as cache:
        recent = cache.get(key, [])
        if at in recent:
            recent.remove(at)
            cache.set(key, recent, timeout=math.ceil(_window()))


def clear_attempts(key: str) -> None:
    with _counting() as cache:
        cache.delete(key)


class LoginRateLimitMiddleware:
    """Counts every POST to the sign-in page before the password is checked, and
    answers 429 once the limit is reached."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or request.path_info != reverse("login"):
            return self.get_response(request)
        key = attempts_key(str(request.POST.get("username", "")), _client_address(request))
        now = time.time()
        wait = take_attempt(key, now=now)
        if wait:
            return _too_many(request, wait)
        setattr(request, _REQUEST_KEY, key)
        response = self.get_response(request)
        if not getattr(request, _REQUEST_CHECKED, False):
            give_back_attempt(key, now)
        return response


def _too_many(request: HttpRequest, wait: float) -> HttpResponse:
    minutes = max(1, math.ceil(wait / 60))
    body = render_to_string("429.html", {"minutes": minutes}, request=request)
    response = HttpResponse(body, status=429)
    response["Retry-After"] = str(math.ceil(wait))
    return response


@receiver(user_login_failed, dispatch_uid="threadsite.security.attempt_failed")
def _failed(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    if request is not None:
        setattr(request, _REQUEST_CHECKED, True)  # a password was checked: it counts


@receiver(user_logged_in, dispatch_uid="threadsite.security.clear_attempts")
def _signed_in(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    key = getattr(request, _REQUEST_KEY, None) if request is not None else None
    if key:
        setattr(request, _REQUEST_CHECKED, True)
        clear_attempts(key)
