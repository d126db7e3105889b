"""Threadsite's file-backed store of threads, messages, runs and run steps.

Plain Python: this package never imports Django, so the worker, scripts and tests can use
it alone. It alone knows the on-disk layout.
"""

from __future__ import annotations

from .assistants import Assistant, AssistantStore, new_assistant
from .catalog import Catalog, HourBucket, RunSummary, ThreadSummary
from .errors import (
    AlreadyExists,
    AssistantNotFound,
    LeaseLost,
    MessageNotFound,
    RunInTerminalState,
    RunNotFound,
    RunStepNotFound,
    StoreError,
    StoreIOError,
    ThreadBusy,
    ThreadNotFound,
)
from .ids import is_safe_id, new_id
from .integrity import IntegrityReport, Problem
from .preflight import check_store_directory
from .records import (
    Draft,
    FilesVersion,
    Lease,
    Run,
    RunError,
    RunRef,
    RunStatus,
    RunStep,
    RunStepStatus,
    RunUsage,
    RunView,
    Thread,
    ThreadMessage,
    WorkerHeartbeat,
    new_message,
    new_run,
    new_step,
    new_thread,
    text_content,
)
from .thread_store import (
    WORKER_LOST,
    CorruptRecord,
    InvalidCursor,
    Page,
    ThreadStore,
    worker_is_alive,
)

__all__ = [
    "AlreadyExists",
    "Assistant",
    "AssistantNotFound",
    "AssistantStore",
    "Catalog",
    "CorruptRecord",
    "Draft",
    "FilesVersion",
    "HourBucket",
    "IntegrityReport",
    "Lease",
    "LeaseLost",
    "MessageNotFound",
    "InvalidCursor",
    "Page",
    "Problem",
    "Run",
    "RunError",
    "RunInTerminalState",
    "RunRef",
    "RunNotFound",
    "RunStatus",
    "RunStep",
    "RunStepNotFound",
    "RunStepStatus",
    "RunSummary",
    "RunUsage",
    "RunView",
    "StoreError",
    "StoreIOError",
    "Thread",
    "ThreadBusy",
    "ThreadMessage",
    "ThreadNotFound",
    "ThreadStore",
    "ThreadSummary",
    "WORKER_LOST",
    "WorkerHeartbeat",
    "check_store_directory",
    "is_safe_id",
    "new_assistant",
    "new_id",
    "new_message",
    "new_run",
    "new_step",
    "new_thread",
    "text_content",
    "worker_is_alive",
]
