"""The API's error envelope, `{"error": {"message", "type", "param", "code"}}`, and what
each store error becomes.

A refused cancel or a busy thread is a 400, never a 409: the official client retries
409s, and retrying cannot make either succeed.
"""

from __future__ import annotations

import logging

from django.http import JsonResponse

from stores import (
    AssistantNotFound,
    InvalidCursor,
    MessageNotFound,
    RunInTerminalState,
    RunNotFound,
    RunStepNotFound,
    StoreError,
    StoreIOError,
    ThreadBusy,
    ThreadNotFound,
)

log = logging.getLogger("threadsite.api")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class ApiError(Exception):
    """A request the API answers with an error; raised anywhere below a view."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,  # noqa: A002 - the envelope's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def error_response(error: ApiError) -> JsonResponse:
    body = {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }
    response = JsonResponse(body, status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def from_store_error(error: StoreError) -> ApiError:
    """The API's answer to a store error (the thread store's or the assistants')."""
    if isinstance(error, ThreadNotFound):
        return not_found(f"No thread found with id '{error.thread_id}'.")
    if isinstance(error, RunNotFound):
        return not_found(f"No run found with id '{error.run_id}'.")
    if isinstance(error, RunStepNotFound):
        return not_found(f"No run step found with id '{error.step_id}'.")
    if isinstance(error, MessageNotFound):
        return not_found(f"No message found with id '{error.message_id}'.")
    if isinstance(error, AssistantNotFound):
        return not_found(f"No assistant found with id '{error.assistant_id}'.")
    if isinstance(error, ThreadBusy):
        return bad_request(
            f"Thread {error.thread_id} already has an active run {error.run_id}: wait for it "
            "to end, or cancel it.",
            code="thread_busy",
        )
    if isinstance(error, RunInTerminalState):
        return bad_request(
            f"Cannot cancel run with status '{error.run.status.value}': it has already ended.",
            code="run_already_ended",
        )
    if isinstance(error, InvalidCursor):
        return bad_request(str(error), param="after")
    if isinstance(error, StoreIOError):
        log.error("storage failure: %s", error)
        return ApiError(
            503,
            "The server could not read or write its storage. Try again shortly.",
            type=SERVER_ERROR,
            headers={"Retry-After": "10"},
        )
    log.error("unexpected store error: %s", error)
    return server_error()


def server_error() -> ApiError:
    return ApiError(
        500, "The server had an error while processing your request.", type=SERVER_ERROR
    )
