"""Production settings: `manage.py check --deploy` passes; every answer carries the
security headers (a Content-Security-Policy that allows our own scripts and styles and
nothing inline, X-Frame-Options, Referrer-Policy, nosniff, HSTS behind HTTPS); cookies
are Secure and HttpOnly behind HTTPS; sign-in attempts are limited, across processes."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from reliability_testkit import (
    PASSWORD,
    REPO_ROOT,
    SECRET_KEY,
    STAFF,
    Site,
    manage,
    record_figures,
)
from reliability_testkit import (
    Client as HttpClient,
)

from threadsite import security

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


def test_check_deploy_passes_with_production_settings(tmp_path: Path) -> None:
    result = manage(
        tmp_path / "data",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_ALLOWED_HOSTS="threadsite.example.com",
        DJANGO_SECRET_KEY=SECRET_KEY,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def headers_ok(reply: Any, where: str, *, page: bool = True) -> None:
    headers = reply.headers
    assert headers.get("content-security-policy") == CSP, where
    if page:  # WhiteNoise answers static files before the clickjacking middleware
        assert headers.get("x-frame-options") == "DENY", where
    assert headers.get("referrer-policy") == "same-origin", where
    assert headers.get("x-content-type-options") == "nosniff", where
    assert headers.get("strict-transport-security", "").startswith("max-age=31536000"), where


def cookie(reply: Any, name: str) -> str:
    found = [c for c in reply.headers.get("set-cookie", "").split("\n") if c.startswith(name)]
    assert found, f"no {name} cookie"
    return found[0]


def test_security_headers_and_cookies_behind_https(prod_site: Site) -> None:
    client = HttpClient(prod_site.base_url)
    login = client.get("/accounts/login/")
    assert login.status == 200
    headers_ok(login, "the sign-in page")
    csrf = cookie(login, "csrftoken").lower()
    assert "secure" in csrf and "httponly" in csrf and "samesite=lax" in csrf
    signed = client.sign_in(STAFF)
    assert signed.status == 302
    session = cookie(signed, "sessionid").lower()
    assert "secure" in session and "httponly" in session and "samesite=lax" in session
    for path in ["/", "/threads/", "/nowhere", "/healthz", "/static/css/site.css"]:
        reply = client.get(path)
        assert reply.status in (200, 404), (path, reply.status)
        headers_ok(reply, path, page=not path.startswith("/static/"))
    api = HttpClient(prod_site.base_url).api("GET", "/threads")
    assert api.status == 401
    headers_ok(api, "the API")
    # Plain HTTP is sent to HTTPS, except the load balancer's probe.
    plain = HttpClient(prod_site.base_url, https=False)
    moved = plain.get("/threads/")
    assert moved.status == 301 and moved.location.startswith("https://")
    assert plain.get("/healthz").status == 200


INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"<style\b", re.I), "a <style> element"),
    (re.compile(r"\sstyle\s*=", re.I), "a style= attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "an on...= handler"),
    (re.compile(r"\bhx-on\b|hx-on:", re.I), "hx-on (needs eval)"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
]


def test_no_template_needs_inline_script_or_style() -> None:
    found = []
    for template in sorted((REPO_ROOT / "templates").rglob("*.html")):
        text = template.read_text()
        for pattern, what in INLINE:
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{template.relative_to(REPO_ROOT)}:{line}: {what}")
    assert not found, "\n".join(found)
    base = (REPO_ROOT / "templates" / "base.html").read_text()
    config = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", base)
    assert config is not None
    assert json.loads(config.group(1)) == {"includeIndicatorStyles": False, "allowEval": False}


# --------------------------------------------------------------- sign-in limits


@pytest.fixture
def attempts_dir(settings: Any, tmp_path: Path) -> Path:
    location = tmp_path / "login-attempts"
    settings.CACHES = {
        **settings.CACHES,
        "login_attempts": {
            "BACKEND": "threadsite.caches.SharedFileCache",
            "LOCATION": location,
        },
    }
    return location


def sign_in(address: str = "10.0.0.1", username: str = "ada", password: str = "nope") -> Any:
    return Client(REMOTE_ADDR=address).post(
        "/accounts/login/", {"username": username, "password": password}
    )


@pytest.mark.django_db
def test_five_failed_sign_ins_then_429(
    attempts_dir: Path, django_user_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    django_user_model.objects.create_user(username="ada", password=PASSWORD, is_staff=True)
    for _ in range(5):
        assert sign_in().status_code == 200  # the form again, with its error
    refused = sign_in(password=PASSWORD)  # even the right password waits now
    assert refused.status_code == 429
    assert "Too many sign-in attempts" in refused.content.decode()
    assert 0 < int(refused["Retry-After"]) <= 15 * 60
    # Other accounts from there, and this account from elsewhere, are not held up.
    assert sign_in(username="someone-else").status_code == 200
    assert sign_in(address="10.0.0.2", password=PASSWORD).status_code == 302
    # Posts that never check a password (no username) do not count.
    for _ in range(6):
        assert Client(REMOTE_ADDR="10.0.0.3").post("/accounts/login/", {}).status_code == 200
    assert sign_in(address="10.0.0.3", password=PASSWORD).status_code == 302
    # Fifteen minutes later, the account may be tried again; success clears the count.
    later = security.time.time() + 15 * 60 + 1
    monkeypatch.setattr(security.time, "time", lambda: later)
    assert sign_in(password=PASSWORD).status_code == 302
    for _ in range(4):
        assert sign_in().status_code == 200
    assert sign_in(password=PASSWORD).status_code == 302


def test_the_limit_holds_across_server_processes(prod_site: Site) -> None:
    """Twelve wrong passwords at once, spread over gunicorn's processes: five are
    checked, seven refused."""
    username = "mallory"
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(12, timeout=30)

    def attempt() -> None:
        client = HttpClient(prod_site.base_url)
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None
        start.wait()
        reply = client.form(
            "/accounts/login/",
            {"csrfmiddlewaretoken": token.group(1), "username": username, "password": "no"},
        )
        with lock:
            statuses.append(reply.status)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200] * 5 + [429] * 7, statuses
    record_figures("login_rate_limit", concurrent_attempts=12, checked=5, refused=7)
