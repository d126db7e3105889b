"""The store's exception family: every failure a caller can meet is a StoreError."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .records import Run


class StoreError(Exception):
    """Base of every error the store raises."""


class ThreadNotFound(StoreError):
    def __init__(self, thread_id: str) -> None:
        super().__init__(f"No thread with ID {thread_id!r}.")
        self.thread_id = thread_id


class RunNotFound(StoreError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"No run with ID {run_id!r}.")
        self.run_id = run_id


class RunStepNotFound(StoreError):
    def __init__(self, step_id: str) -> None:
        super().__init__(f"No run step with ID {step_id!r}.")
        self.step_id = step_id


class MessageNotFound(StoreError):
    def __init__(self, message_id: str) -> None:
        super().__init__(f"No message with ID {message_id!r}.")
        self.message_id = message_id


class AssistantNotFound(StoreError):
    def __init__(self, assistant_id: str) -> None:
        super().__init__(f"No assistant with ID {assistant_id!r}.")
        self.assistant_id = assistant_id


class RunInTerminalState(StoreError):
    """The run already ended; `run` is its final state, as stored."""

    def __init__(self, run: Run) -> None:
        super().__init__(f"Run {run.id} already ended with status {run.status.value!r}.")
        self.run = run


class LeaseLost(StoreError):
    """A worker wrote to a run it no longer holds (its lease lapsed or was handed back)."""

    def __init__(self, run_id: str, worker_id: str) -> None:
        super().__init__(f"Worker {worker_id} no longer holds run {run_id}.")
        self.run_id = run_id
        self.worker_id = worker_id


class AlreadyExists(StoreError):
    def __init__(self, record_id: str) -> None:
        super().__init__(f"A record with ID {record_id!r} already exists.")
        self.record_id = record_id


class ThreadBusy(StoreError):
    """The thread has an active run, which blocks new runs and user messages."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        super().__init__(
            f"Thread {thread_id} has an active run ({run_id}); wait for it to end or cancel it."
        )
        self.thread_id = thread_id
        self.run_id = run_id


class StoreIOError(StoreError):
    """The disk failed (EIO, ENOSPC, EACCES...): never reported as "not found"."""

    def __init__(self, action: str, error: OSError) -> None:
        super().__init__(f"Storage error while {action}: {error.strerror or error}")
        self.action = action
        self.errno = error.errno
