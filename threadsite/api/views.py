"""The /v1 endpoints: parse the request, call the store, answer v2 JSON.

Each address is one view made by `endpoint()`, which dispatches on the method and gives
every endpoint the same frame: bearer-key authentication instead of a staff sign-in, no
CSRF (no cookies are used), and JSON errors for everything, never a page or a redirect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from stores import MessageNotFound, Run, StoreError, Thread, new_assistant
from threadsite.services import get_assistant_store, get_store

from . import operations, params, shapes, streaming
from .auth import authenticate
from .errors import ApiError, bad_request, error_response, from_store_error, server_error

log = logging.getLogger("threadsite.api")

POLL_AFTER_MS = "500"  # openai-poll-after-ms: how soon a client polling a run asks again
ASSISTANT_TEXT_FIELDS = {
    "name": 256,
    "description": 512,
    "instructions": params.MAX_INSTRUCTIONS_CHARS,
}

Handler = Callable[..., HttpResponse]


def endpoint(**handlers: Handler) -> Callable[..., HttpResponse]:
    """A view answering the methods named (get=, post=, delete=, or any=) with their
    handlers."""
    allowed = ", ".join(sorted(method.upper() for method in handlers))

    @csrf_exempt
    @login_not_required
    def view(request: HttpRequest, **kwargs: str) -> HttpResponse:
        try:
            authenticate(request)
            method = (request.method or "").lower()
            handler = handlers.get(method) or handlers.get("any")
            if handler is None:
                raise ApiError(
                    405,
                    f"{request.method} is not allowed here; use {allowed}.",
                    headers={"Allow": allowed},
                )
            return handler(request, **kwargs)
        except ApiError as error:
            return error_response(error)
        except StoreError as error:
            return error_response(from_store_error(error))
        except Exception:
            log.exception("API request %s %s failed", request.method, request.path)
            return error_response(server_error())

    return view


def ok(data: dict[str, Any]) -> JsonResponse:
    return JsonResponse(data)


def run_response(run: Run) -> JsonResponse:
    response = ok(shapes.run(run, run_timeout=operations.run_timeout()))
    response["openai-poll-after-ms"] = POLL_AFTER_MS
    return response


def list_response(items: list[dict[str, Any]], has_more: bool) -> JsonResponse:
    return ok(shapes.page(items, has_more=has_more))


# -------------------------------------------------------------------- assistants


def list_assistants(request: HttpRequest) -> HttpResponse:
    query = params.list_query(request)
    everyone = operations.in_order(get_assistant_store().list_assistants(), query.order)
    page, has_more = operations.page_of(everyone, query, key=lambda a: a.id)
    return list_response([shapes.assistant(a) for a in page], has_more)


def create_assistant(request: HttpRequest) -> HttpResponse:
    body = params.json_body(request)
    params.no_tools(body)
    assistant = new_assistant(
        model=params.required_str(body, "model", max_length=256),
        metadata=params.metadata(body),
        **{
            name: params.optional_str(body, name, max_length=max_length)
            for name, max_length in ASSISTANT_TEXT_FIELDS.items()
        },
    )
    return ok(shapes.assistant(get_assistant_store().create_assistant(assistant)))


def retrieve_assistant(request: HttpRequest, assistant_id: str) -> HttpResponse:
    return ok(shapes.assistant(get_assistant_store().get_assistant(assistant_id)))


def modify_assistant(request: HttpRequest, assistant_id: str) -> HttpResponse:
    body = params.json_body(request)
    params.no_tools(body)
    changes: dict[str, Any] = {}
    if body.get("model") is not None:
        changes["model"] = params.required_str(body, "model", max_length=256)
    for name, max_length in ASSISTANT_TEXT_FIELDS.items():
        if name in body:  # null clears the field
            changes[name] = params.optional_str(body, name, max_length=max_length)
    metadata = params.metadata(body)
    if metadata is not None:
        changes["metadata"] = metadata
    store = get_assistant_store()
    if not changes:
        return ok(shapes.assistant(store.get_assistant(assistant_id)))
    return ok(shapes.assistant(store.update_assistant(assistant_id, **changes)))


def delete_assistant(request: HttpRequest, assistant_id: str) -> HttpResponse:
    get_assistant_store().delete_assistant(assistant_id)
    return ok(shapes.deleted("assistant", assistant_id))


# ----------------------------------------------------------------------- threads


def list_threads(request: HttpRequest) -> HttpResponse:
    page, has_more = operations.list_threads(get_store(), params.list_query(request))
    return list_response([shapes.thread(t) for t in page], has_more)


def create_thread(request: HttpRequest) -> HttpResponse:
    body = params.json_body(request)
    thread = operations.create_thread(
        get_store(),
        metadata=params.metadata(body) or {},
        messages=params.message_list(body, "messages"),
    )
    return ok(shapes.thread(thread))


def retrieve_thread(request: HttpRequest, thread_id: str) -> HttpResponse:
    return ok(shapes.thread(get_store().get_thread(thread_id)))


def modify_thread(request: HttpRequest, thread_id: str) -> HttpResponse:
    metadata = params.metadata(params.json_body(request))
    store = get_store()
    if metadata is None:
        return ok(shapes.thread(store.get_thread(thread_id)))
    return ok(shapes.thread(store.update_thread_metadata(thread_id, metadata)))


def delete_thread(request: HttpRequest, thread_id: str) -> HttpResponse:
    get_store().delete_thread(thread_id)
    return ok(shapes.deleted("thread", thread_id))


def create_thread_and_run(request: HttpRequest) -> HttpResponse:
    body = params.json_body(request)
    spec = params.run_input(body)
    thread_body = params.optional_object(body, "thread")
    metadata = params.metadata(thread_body) or {}
    messages = params.message_list(thread_body, "messages")
    store = get_store()

    def start() -> tuple[Thread, Run]:
        return operations.create_thread_and_run(
            store, get_assistant_store(), metadata=metadata, messages=messages, spec=spec
        )

    if params.optional_bool(body, "stream"):
        return streaming.open_stream(store, start, run_timeout=operations.run_timeout())
    return run_response(start()[1])


# ---------------------------------------------------------------------- messages


def list_messages(request: HttpRequest, thread_id: str) -> HttpResponse:
    query = params.list_query(request)
    try:
        page, has_more = get_store().list_messages_page(
            thread_id,
            limit=query.limit,
            order=query.order,
            after=query.after,
            before=query.before,
            run_id=request.GET.get("run_id") or None,
        )
    except MessageNotFound as missing:
        cursor = "after" if query.after else "before"
        raise bad_request(
            f"'{cursor}' names no message of this thread: {missing.message_id!r}.", param=cursor
        ) from None
    return list_response([shapes.message(m) for m in page], has_more)


def create_message(request: HttpRequest, thread_id: str) -> HttpResponse:
    item = params.message_input(params.json_body(request))
    message = operations.build_message(thread_id, item)
    return ok(shapes.message(get_store().append_message(thread_id, message)))


def retrieve_message(request: HttpRequest, thread_id: str, message_id: str) -> HttpResponse:
    return ok(shapes.message(get_store().get_message(thread_id, message_id)))


def modify_message(request: HttpRequest, thread_id: str, message_id: str) -> HttpResponse:
    metadata = params.metadata(params.json_body(request))
    store = get_store()
    if metadata is None:
        return ok(shapes.message(store.get_message(thread_id, message_id)))
    return ok(shapes.message(store.update_message_metadata(thread_id, message_id, metadata)))


def delete_message(request: HttpRequest, thread_id: str, message_id: str) -> HttpResponse:
    get_store().delete_message(thread_id, message_id)
    return ok(shapes.deleted("thread.message", message_id))


# -------------------------------------------------------------------------- runs


def list_runs(request: HttpRequest, thread_id: str) -> HttpResponse:
    query = params.list_query(request)
    newest_first = get_store().list_runs(thread_id)
    ordered = newest_first if query.order == "desc" else newest_first[::-1]
    page, has_more = operations.page_of(ordered, query, key=lambda run: run.id)
    timeout = operations.run_timeout()
    response = list_response([shapes.run(r, run_timeout=timeout) for r in page], has_more)
    response["openai-poll-after-ms"] = POLL_AFTER_MS
    return response


def create_run(request: HttpRequest, thread_id: str) -> HttpResponse:
    body = params.json_body(request)
    spec = params.run_input(body)
    store = get_store()

    def start() -> tuple[None, Run]:
        return None, operations.start_run(
            store, get_assistant_store(), thread_id=thread_id, spec=spec
        )

    if params.optional_bool(body, "stream"):
        return streaming.open_stream(store, start, run_timeout=operations.run_timeout())
    return run_response(start()[1])


def retrieve_run(request: HttpRequest, thread_id: str, run_id: str) -> HttpResponse:
    return run_response(get_store().get_run(thread_id, run_id))


def modify_run(request: HttpRequest, thread_id: str, run_id: str) -> HttpResponse:
    metadata = params.metadata(params.json_body(request))
    store = get_store()
    if metadata is None:
        return run_response(store.get_run(thread_id, run_id))
    return run_response(store.update_run_metadata(thread_id, run_id, metadata))


def cancel_run(request: HttpRequest, thread_id: str, run_id: str) -> HttpResponse:
    return run_response(get_store().cancel_run(thread_id, run_id))


def list_steps(request: HttpRequest, thread_id: str, run_id: str) -> HttpResponse:
    query = params.list_query(request)
    ordered = operations.in_order(get_store().list_steps(thread_id, run_id), query.order)
    page, has_more = operations.page_of(ordered, query, key=lambda step: step.id)
    return list_response([shapes.step(s) for s in page], has_more)


def retrieve_step(request: HttpRequest, thread_id: str, run_id: str, step_id: str) -> HttpResponse:
    return ok(shapes.step(get_store().get_step(thread_id, run_id, step_id)))


def unknown(request: HttpRequest, **kwargs: str) -> HttpResponse:
    raise ApiError(404, f"Invalid URL ({request.method} {request.path}).")


assistants = endpoint(get=list_assistants, post=create_assistant)
assistant = endpoint(get=retrieve_assistant, post=modify_assistant, delete=delete_assistant)
threads = endpoint(get=list_threads, post=create_thread)
thread_and_run = endpoint(post=create_thread_and_run)
thread = endpoint(get=retrieve_thread, post=modify_thread, delete=delete_thread)
messages = endpoint(get=list_messages, post=create_message)
message = endpoint(get=retrieve_message, post=modify_message, delete=delete_message)
runs = endpoint(get=list_runs, post=create_run)
run = endpoint(get=retrieve_run, post=modify_run)
run_cancel = endpoint(post=cancel_run)
steps = endpoint(get=list_steps)
step = endpoint(get=retrieve_step)
not_found = endpoint(any=unknown)
