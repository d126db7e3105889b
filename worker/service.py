"""The worker loop: claim queued runs, execute them, and keep every run moving.

One main thread does the bookkeeping (claims, lease renewal, watching for cancels and
time limits, reaping runs whose worker died, heartbeats); each claimed run streams its
reply in a thread of its own. Cancels and time limits are applied by the main thread
directly through the store, so they take effect within a poll interval even when the
model server hangs; the run's thread then finds the run ended and stops.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from stores import (
    LeaseLost,
    RunError,
    RunInTerminalState,
    RunRef,
    RunStatus,
    RunUsage,
    StoreError,
    ThreadMessage,
    ThreadStore,
    WorkerHeartbeat,
    new_id,
    new_message,
    new_step,
)
from stores import Run as StoredRun

from .backends import Backend, BackendError, ChatMessage, ModelRequest, ReplyStream, Usage
from .config import WorkerConfig

log = logging.getLogger("threadsite.worker")

HEARTBEAT_SECONDS = 2.0
WATCH_SECONDS = 0.25  # how often running runs are checked for a cancel: "about a second"
REAP_SECONDS = 1.0
DRAFT_SECONDS = 0.1  # at most this often the growing text is published
SHUTDOWN_REASON = "The worker executing this run shut down; the run was handed back to the queue."


@dataclass
class Job:
    """One run this worker executes."""

    ref: RunRef
    run: StoredRun
    text: str = ""
    # Chosen up front so the step, the draft and the final message all name it.
    message_id: str = field(default_factory=lambda: new_id("msg"))
    stream: ReplyStream | None = None
    abandoned: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    renewed_at: float = field(default_factory=time.monotonic)

    def abandon(self) -> None:
        """Stop caring about this run: the main thread has ended or released it."""
        self.abandoned.set()
        stream = self.stream
        if stream is not None:
            stream.close()


class RunWorker:
    def __init__(
        self,
        store: ThreadStore,
        config: WorkerConfig,
        backend: Backend,
        *,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.backend = backend
        host = socket.gethostname()
        self.worker_id = worker_id or _safe_worker_id(host, os.getpid())
        self.host = host
        self.started_at = time.time()
        self.stopping = threading.Event()
        self._jobs: dict[RunRef, Job] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()

    # ---------------------------------------------------------------- main loop

    def run_forever(self) -> None:
        """Work until `stopping` is set, then finish or hand back what is running."""
        log.info(
            "worker %s started: backend %s, %d runs at once",
            self.worker_id,
            self.backend.name,
            self.config.concurrency,
        )
        next_heartbeat = next_reap = next_watch = 0.0
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                if now >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = now + HEARTBEAT_SECONDS
                if now >= next_watch:
                    self._watch_jobs()
                    next_watch = now + WATCH_SECONDS
                if now >= next_reap:
                    self._reap_others()
                    next_reap = now + REAP_SECONDS
                self._claim_waiting()
                self._wake.wait(self.config.poll_interval_seconds)
                self._wake.clear()
            self._shut_down()
        finally:
            self.store.remove_heartbeat(self.worker_id)
            log.info("worker %s stopped", self.worker_id)

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    def _active(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def _heartbeat(self) -> None:
        try:
            self.store.record_heartbeat(
                WorkerHeartbeat(
                    worker_id=self.worker_id,
                    host=self.host,
                    pid=os.getpid(),
                    backend=self.backend.name,
                    concurrency=self.config.concurrency,
                    running=len(self._active()),
                    started_at=self.started_at,
                    seen_at=time.time(),
                )
            )
        except StoreError as error:
            log.warning("could not record a heartbeat: %s", error)

    def _claim_waiting(self) -> None:
        free = self.config.concurrency - len(self._active())
        if free <= 0:
            return
        try:
            waiting = self.store.queued_runs()
        except StoreError as error:
            log.warning("could not read the queue: %s", error)
            return
        for ref in waiting:
            if free <= 0 or self.stopping.is_set():
                return
            try:
                run = self.store.claim_run(
                    ref,
                    worker_id=self.worker_id,
                    lease_seconds=self.config.lease_seconds,
                    run_timeout=self.config.run_timeout_seconds,
                )
            except StoreError as error:
                log.warning("could not claim run %s: %s", ref.run_id, error)
                continue
            if run is None:
                continue
            job = Job(ref=ref, run=run)
            with self._lock:
                self._jobs[ref] = job
            free -= 1
            threading.Thread(
                target=self._execute, args=(job,), name=f"run-{ref.run_id}", daemon=True
            ).start()

    def _watch_jobs(self) -> None:
        """Apply cancels, time limits and lost leases to this worker's runs."""
        now = time.monotonic()
        for job in self._active():
            if job.abandoned.is_set():
                continue
            try:
                run = self.store.get_run(job.ref.thread_id, job.ref.run_id)
                if run.status.is_terminal:
                    job.abandon()  # ended elsewhere (an operator, the reaper)
                elif run.status is RunStatus.CANCELLING:
                    self._end(job, RunStatus.CANCELLED)
                elif run.created_at + self.config.run_timeout_seconds <= time.time():
                    self._end(job, RunStatus.EXPIRED)
                elif now - job.renewed_at >= self.config.lease_seconds / 3:
                    if self.store.renew_lease(
                        job.ref, worker_id=self.worker_id, lease_seconds=self.config.lease_seconds
                    ):
                        job.renewed_at = now
                    else:
                        log.warning("lost the lease on run %s", job.ref.run_id)
                        job.abandon()
            except StoreError as error:
                log.warning("could not check run %s: %s", job.ref.run_id, error)

    def _end(self, job: Job, status: RunStatus, error: RunError | None = None) -> None:
        """End the run now, keeping the text so far as an incomplete message."""
        job.abandon()
        try:
            self.store.finish_run(
                job.ref.thread_id,
                job.ref.run_id,
                status,
                error,
                partial=self._message(job, status="incomplete") if job.text else None,
                worker_id=self.worker_id,
            )
            log.info("run %s ended %s", job.ref.run_id, status.value)
        except (RunInTerminalState, LeaseLost):
            pass  # the run's own thread finished first, or the run is no longer ours
        except StoreError as error:  # the thread was deleted, or the disk failed
            log.warning("could not end run %s: %s", job.ref.run_id, error)

    def _reap_others(self) -> None:
        """End runs whose worker is gone (lease lapsed) or that outlived the time limit."""
        try:
            claimed = self.store.running_runs()
        except StoreError as error:
            log.warning("could not read running runs: %s", error)
            return
        with self._lock:
            mine = set(self._jobs)
        for ref in claimed:
            if ref in mine:
                continue
            try:
                ended = self.store.reap_run(ref, run_timeout=self.config.run_timeout_seconds)
            except StoreError as error:
                log.warning("could not check run %s: %s", ref.run_id, error)
                continue
            if ended is not None:
                log.warning("run %s ended %s: its worker was lost", ref.run_id, ended.status)

    def _shut_down(self) -> None:
        """Let running runs finish for a grace period, then hand the rest back."""
        deadline = time.monotonic() + self.config.shutdown_grace_seconds
        while self._active() and time.monotonic() < deadline:
            self._watch_jobs()
            time.sleep(min(WATCH_SECONDS, self.config.poll_interval_seconds * 4))
        for job in self._active():
            job.abandon()
            try:
                self.store.release_run(job.ref, worker_id=self.worker_id, reason=SHUTDOWN_REASON)
                log.info("handed run %s back to the queue", job.ref.run_id)
            except StoreError as error:
                log.warning("could not hand back run %s: %s", job.ref.run_id, error)

    # ------------------------------------------------------------ one run

    def _execute(self, job: Job) -> None:
        try:
            self._stream_reply(job)
        except Exception:
            log.exception("run %s failed inside the worker", job.ref.run_id)
            if not job.abandoned.is_set():
                self._end(
                    job,
                    RunStatus.FAILED,
                    RunError("server_error", "The worker hit an internal error; see its log."),
                )
        finally:
            with self._lock:
                self._jobs.pop(job.ref, None)
            job.done.set()
            self._wake.set()

    def _stream_reply(self, job: Job) -> None:
        thread_id, run_id = job.ref.thread_id, job.ref.run_id
        run = job.run
        try:
            self.store.append_step(
                thread_id,
                run_id,
                new_step(
                    thread_id, run_id, assistant_id=run.assistant_id, message_id=job.message_id
                ),
            )
        except RunInTerminalState:
            return  # cancelled between the claim and now: nothing to do
        request = self._request(run)
        stream = self.backend.start(request)
        job.stream = stream
        if job.abandoned.is_set():
            stream.close()
            return
        published = 0.0
        try:
            for delta in stream:
                if job.abandoned.is_set():
                    return
                job.text += delta
                if time.monotonic() - published >= DRAFT_SECONDS:
                    self.store.write_draft(
                        thread_id,
                        run_id,
                        job.text,
                        message_id=job.message_id,
                        worker_id=self.worker_id,
                    )
                    published = time.monotonic()
        except LeaseLost:
            log.info("run %s was taken from this worker mid-reply", run_id)
            job.abandon()
            return
        except BackendError as error:
            if not job.abandoned.is_set():
                self._end(job, RunStatus.FAILED, RunError(error.code, error.message))
            return
        if job.abandoned.is_set():
            return
        usage = stream.usage
        try:
            ended = self.store.complete_run(
                thread_id,
                run_id,
                self._message(job, status="completed"),
                usage=_run_usage(usage),
                worker_id=self.worker_id,
            )
            log.info("run %s ended %s", run_id, ended.status.value)
        except RunInTerminalState as error:
            log.info("run %s had already ended %s", run_id, error.run.status.value)
        except LeaseLost:
            log.info("run %s was taken from this worker before it finished", run_id)

    def _request(self, run: StoredRun) -> ModelRequest:
        page = self.store.latest_messages(run.thread_id, limit=self.config.context_messages)
        messages = []
        if run.instructions:
            messages.append(ChatMessage("system", run.instructions))
        messages.extend(
            ChatMessage(m.role, m.text) for m in page.items if m.role in {"user", "assistant"}
        )
        return ModelRequest(model=self.backend.model_for(run.model), messages=messages)

    def _message(self, job: Job, *, status: str) -> ThreadMessage:
        return new_message(
            job.ref.thread_id,
            "assistant",
            job.text,
            message_id=job.message_id,
            run_id=job.ref.run_id,
            assistant_id=job.run.assistant_id,
            status=status,
        )


def _run_usage(usage: Usage | None) -> RunUsage | None:
    if usage is None:
        return None
    return RunUsage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


def _safe_worker_id(host: str, pid: int) -> str:
    clean = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in host)
    clean = clean.strip("-_")[:60] or "host"
    return f"{clean}-{pid}-{new_id('w')[-8:]}"
