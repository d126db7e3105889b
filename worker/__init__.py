"""The run worker: takes queued runs from the store and executes them against a model.

Plain Python like `stores`; the `runworker` management command wires it to settings.
"""

from __future__ import annotations

from .backends import BackendError, ConfigurationError, make_backend
from .config import WorkerConfig
from .service import RunWorker

__all__ = ["BackendError", "ConfigurationError", "RunWorker", "WorkerConfig", "make_backend"]
