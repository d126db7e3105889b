"""`python manage.py runworker`: execute queued runs until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from stores import StoreError, check_store_directory
from threadsite.services import get_store
from worker import ConfigurationError, RunWorker, WorkerConfig, make_backend


class Command(BaseCommand):
    help = (
        "Execute queued runs with the configured model backend (THREADSITE_BACKEND). "
        "SIGTERM or Ctrl-C lets running runs finish for a grace period, then hands the "
        "rest back to the queue."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--concurrency",
            type=int,
            help="Runs executed at once (default: THREADSITE_WORKER_CONCURRENCY, or 4).",
        )

    def handle(self, *args: Any, concurrency: int | None, **options: Any) -> None:
        try:
            config = WorkerConfig.from_env()
            if concurrency is not None:
                if concurrency < 1:
                    raise ConfigurationError("--concurrency must be at least 1.")
                config = WorkerConfig(**{**config.__dict__, "concurrency": concurrency})
            backend = make_backend(config)
            store = get_store()
            check_store_directory(store.root)  # writable, and its locks hold
        except (ConfigurationError, StoreError) as error:
            raise CommandError(f"The run worker cannot start: {error}") from None

        logging.basicConfig(
            stream=sys.stderr,
            level=logging.INFO,
            format="%(asctime)s worker %(levelname)s %(message)s",
        )
        worker = RunWorker(store, config, backend)

        def stop(signum: int, frame: object) -> None:
            worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        worker.run_forever()
