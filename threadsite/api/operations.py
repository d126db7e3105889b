"""What the API does beyond one store call: threads made with their messages, runs
started from an assistant's defaults, and cursor pages over the store's listings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from functools import cache
from typing import TypeVar

from stores import (
    Assistant,
    AssistantStore,
    Run,
    Thread,
    ThreadMessage,
    ThreadNotFound,
    ThreadStore,
    new_message,
    new_run,
    new_thread,
    text_content,
)
from worker.config import ConfigurationError, WorkerConfig

from .errors import bad_request
from .params import ListQuery, MessageInput, RunInput

T = TypeVar("T")


@cache
def run_timeout() -> float:
    """Seconds a run may take before the worker expires it (the worker's setting)."""
    try:
        return WorkerConfig.from_env().run_timeout_seconds
    except ConfigurationError:
        return WorkerConfig().run_timeout_seconds  # the worker refuses to start anyway


def build_message(thread_id: str, item: MessageInput) -> ThreadMessage:
    """A new message from a request: one text block for each part sent."""
    message = new_message(thread_id, item.role, item.parts[0], metadata=item.metadata)
    return replace(message, content=[block for part in item.parts for block in text_content(part)])


def create_thread(
    store: ThreadStore, *, metadata: dict[str, str], messages: list[MessageInput]
) -> Thread:
    thread = new_thread(metadata)
    return store.create_thread(thread, [build_message(thread.id, item) for item in messages])


def start_run(
    store: ThreadStore, assistants: AssistantStore, *, thread_id: str, spec: RunInput
) -> Run:
    """Queue a run on an existing thread: the assistant's model and instructions unless
    the request overrides them; `additional_messages` go onto the thread first."""
    store.get_thread(thread_id)
    assistant = assistants.get_assistant(spec.assistant_id)
    messages = [build_message(thread_id, item) for item in spec.additional_messages]
    # One atomic step: the messages land only with the run (a busy thread refuses both).
    return store.create_run(thread_id, _new_run(thread_id, assistant, spec), messages)


def create_thread_and_run(
    store: ThreadStore,
    assistants: AssistantStore,
    *,
    metadata: dict[str, str],
    messages: list[MessageInput],
    spec: RunInput,
) -> tuple[Thread, Run]:
    assistant = assistants.get_assistant(spec.assistant_id)  # before anything is written
    thread = create_thread(store, metadata=metadata, messages=messages)
    run = store.create_run(thread.id, _new_run(thread.id, assistant, spec))
    return thread, run


def _new_run(thread_id: str, assistant: Assistant, spec: RunInput) -> Run:
    instructions = spec.instructions if spec.instructions is not None else assistant.instructions
    if spec.additional_instructions:
        instructions = "\n\n".join(p for p in (instructions, spec.additional_instructions) if p)
    return new_run(
        thread_id,
        model=spec.model or assistant.model,
        instructions=instructions,
        assistant_id=spec.assistant_id,
        metadata=spec.metadata,
    )


# ------------------------------------------------------------------------ paging


def page_of(
    items: Iterable[T], query: ListQuery, *, key: Callable[[T], str]
) -> tuple[list[T], bool]:
    """One page of `items` (already in the requested order) after or before the item
    whose key is the cursor, and whether more follow. An unknown cursor is a 400."""
    if query.before is not None:
        preceding: list[T] = []
        for item in items:
            if key(item) == query.before:
                return preceding[-query.limit :], len(preceding) > query.limit
            preceding.append(item)
        raise _unknown_cursor("before", query.before)
    stream: Iterator[T] = iter(items)
    if query.after is not None:
        for item in stream:
            if key(item) == query.after:
                break
        else:
            raise _unknown_cursor("after", query.after)
    found: list[T] = []
    for item in stream:
        if len(found) == query.limit:
            return found, True
        found.append(item)
    return found, False


def _unknown_cursor(param: str, value: str) -> Exception:
    return bad_request(f"'{param}' names no object in this list: {value!r}.", param=param)


def list_threads(store: ThreadStore, query: ListQuery) -> tuple[list[Thread], bool]:
    """A page of threads, read from the store's index around the cursor."""
    try:
        return store.list_threads_page(
            limit=query.limit, order=query.order, after=query.after, before=query.before
        )
    except ThreadNotFound as error:
        param = "after" if query.after is not None else "before"
        raise _unknown_cursor(param, error.thread_id) from None


def in_order(oldest_first: list[T], order: str) -> list[T]:
    """A listing the store gives oldest first, in the requested order."""
    return oldest_first if order == "asc" else oldest_first[::-1]
