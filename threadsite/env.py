"""Read settings from environment variables, failing early with a clear message.

An empty value counts as unset, so a `.env` line like `DJANGO_SECRET_KEY=` falls back to
the default instead of becoming an empty secret.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def get_str(name: str, *, default: str, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    return default if value is None else value


def get_optional_str(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    return _raw(name, environ)


def get_bool(name: str, *, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name} must be true or false (also accepted: 1/0, yes/no, on/off), got {value!r}."
    )


def get_list(
    name: str, *, default: list[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """A comma-separated list; blanks around items are ignored."""
    value = _raw(name, environ)
    if value is None:
        return list(default)
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ImproperlyConfigured(f"{name} must list at least one value, got {value!r}.")
    return items


def get_path(
    name: str, *, default: Path, base_dir: Path, environ: Mapping[str, str] | None = None
) -> Path:
    """A directory path; a relative one is taken relative to `base_dir`."""
    value = _raw(name, environ)
    path = default if value is None else Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise ImproperlyConfigured(f"{name} must name a directory, but {path} is a file.")
    return path


def ensure_dir(name: str, path: Path) -> Path:
    """Create `path` if needed; a new directory is private to its owner (mode 700)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(f"Cannot create the {name} directory {path}: {exc}") from exc
    return path


def load_or_create_secret_key(path: Path) -> str:
    """Read the secret key kept in `path`, creating it (mode 600) on first use.

    The key is written to a temporary file and linked into place, so processes starting
    at once (gunicorn workers) all end up reading the same complete key.
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(get_random_secret_key() + "\n")
                f.flush()
                os.fsync(f.fileno())
            # If another process won the race, its key is the one everybody reads.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(
            f"The secret key file {path} is empty: delete it to have a new key generated, "
            "or set DJANGO_SECRET_KEY."
        )
    return key
