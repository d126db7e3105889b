"""Run Threadsite's processes side by side until Ctrl-C or SIGTERM.

gunicorn serves the site and `runworker` executes runs. If either stops on its own, the
other is stopped too, so a half-running site never lingers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

GUNICORN_CONF = Path(settings.BASE_DIR) / "threadsite" / "gunicorn.conf.py"
STOP_GRACE_SECONDS = 15


def _processes(*, host: str, port: int) -> list[tuple[str, list[str]]]:
    return [
        (
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                str(GUNICORN_CONF),
                "--bind",
                f"{host}:{port}",
            ],
        ),
        ("worker", [sys.executable, "manage.py", "runworker"]),
    ]


class Command(BaseCommand):
    help = "Serve Threadsite (gunicorn and a run worker) until Ctrl-C or SIGTERM stops both."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
        parser.add_argument("--port", type=int, default=8000, help="Port to listen on.")

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        if not 0 < port < 65536:
            raise CommandError(f"--port must be between 1 and 65535, got {port}.")

        stop = threading.Event()

        def request_stop(signum: int, frame: object) -> None:
            stop.set()

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        running: list[tuple[str, subprocess.Popen[bytes]]] = []
        exit_code = 0
        try:
            for name, argv in _processes(host=host, port=port):
                running.append((name, subprocess.Popen(argv, cwd=settings.BASE_DIR)))
            self.stdout.write(f"Threadsite on http://{host}:{port}/ (Ctrl-C stops it)")
            self.stdout.flush()
            while not stop.wait(0.2):
                for name, process in running:
                    code = process.poll()
                    if code is not None and not stop.is_set():
                        self.stderr.write(f"{name} stopped (exit code {code}); stopping the rest.")
                        exit_code = code
                        stop.set()
                        break
        finally:
            self._stop_all(running)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if exit_code:
            sys.exit(exit_code)

    def _stop_all(self, running: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
        for _, process in running:
            if process.poll() is None:
                process.terminate()  # gunicorn: graceful shutdown
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in {STOP_GRACE_SECONDS}s; killing it.")
                process.kill()
                process.wait()
