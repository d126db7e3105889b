"""The worker's settings, read from the environment in one place."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar


class ConfigurationError(Exception):
    """A setting is missing or wrong: reported when the worker starts, not as failed runs."""


@dataclass(frozen=True)
class WorkerConfig:
    backend: str = "echo"
    concurrency: int = 4
    lease_seconds: float = 30.0
    run_timeout_seconds: float = 600.0
    shutdown_grace_seconds: float = 10.0
    poll_interval_seconds: float = 0.05
    echo_delay_seconds: float = 0.05
    model_base_url: str = ""
    # repr=False: the key must never reach a log line or an error page.
    model_api_key: str = field(default="", repr=False)
    model: str = ""
    model_timeout_seconds: float = 60.0
    context_messages: int = 100

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        env = os.environ if env is None else env
        return cls(
            backend=(env.get("THREADSITE_BACKEND") or "").strip().lower() or "echo",
            concurrency=_number(env, "THREADSITE_WORKER_CONCURRENCY", 4, int, minimum=1),
            lease_seconds=_number(env, "THREADSITE_RUN_LEASE_SECONDS", 30.0, float, minimum=1),
            run_timeout_seconds=_number(
                env, "THREADSITE_RUN_TIMEOUT_SECONDS", 600.0, float, minimum=1
            ),
            shutdown_grace_seconds=_number(
                env, "THREADSITE_WORKER_SHUTDOWN_SECONDS", 10.0, float, minimum=0
            ),
            echo_delay_seconds=_number(env, "THREADSITE_ECHO_DELAY", 0.05, float, minimum=0),
            model_base_url=env.get("THREADSITE_MODEL_BASE_URL", "").strip(),
            model_api_key=env.get("THREADSITE_MODEL_API_KEY", ""),
            model=env.get("THREADSITE_MODEL", "").strip(),
            model_timeout_seconds=_number(
                env, "THREADSITE_MODEL_TIMEOUT_SECONDS", 60.0, float, minimum=0.1
            ),
        )


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N, kind: type[N], *, minimum: float) -> N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {raw!r}.") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {raw!r}.")
    return value
