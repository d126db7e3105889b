"""Load generation with wrk (Debian's package), against 127.0.0.1 only, bounded in time."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .server import BenchError

THREADS = 2
CONNECTIONS = 16

# wrk's --latency table: "     99%   12.34ms"
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}

# Cycles through a list of paths, one per request (each wrk thread keeps its own place).
_ROTATE_LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""


@dataclass(frozen=True)
class LoadResult:
    rate: float  # requests per second
    p50_ms: float
    p99_ms: float
    requests: int


def ensure_wrk() -> str:
    """The wrk executable; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError(
            "The benchmark needs wrk, the HTTP load generator. Install it with\n"
            "  sudo apt-get install wrk\nand run `make bench` again."
        )
    print("Installing Debian's wrk for the benchmark", flush=True)
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=environ)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"],
        check=True,
        env=environ,
    )
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk, but it is not on PATH")
    return found


def run_wrk(
    wrk: str,
    url: str,
    *,
    seconds: float,
    headers: dict[str, str] | None = None,
    paths: list[str] | None = None,
    scratch: Path | None = None,
    connections: int = CONNECTIONS,
) -> LoadResult:
    """`wrk -t2 -c16 -d<seconds>s --latency` against `url` (127.0.0.1 only); with `paths`,
    each request takes the next of them in turn."""
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"refusing to generate load against {url}: 127.0.0.1 only")
    command = [
        wrk,
        f"-t{THREADS}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if paths:
        assert scratch is not None
        script = scratch / "rotate.lua"
        quoted = ", ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in paths)
        script.write_text(_ROTATE_LUA % quoted)
        command += ["-s", str(script)]
    command.append(url)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if result.returncode != 0 or not _RATE.search(result.stdout):
        raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return parse_wrk(result.stdout, url)


def parse_wrk(out: str, url: str = "") -> LoadResult:
    """The rate and latency percentiles from wrk's --latency report; BenchError if wrk
    saw failed requests (non-2xx/3xx answers, socket errors, timeouts)."""
    errors = [m.group(0) for m in _ERRORS.finditer(out)]
    if errors:
        raise BenchError(f"wrk saw failed requests against {url}: {'; '.join(errors)}\n{out}")
    percentiles = {int(p): float(v) * _UNIT_MS[u] for p, v, u in _PERCENTILE.findall(out)}
    rate = _RATE.search(out)
    total = _TOTAL.search(out)
    if rate is None or total is None or 99 not in percentiles or 50 not in percentiles:
        raise BenchError(f"could not read wrk's report:\n{out}")
    return LoadResult(
        rate=float(rate.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        requests=int(total.group(1)),
    )
