"""Request bodies and query strings, checked the way the Assistants API checks them.

Unknown fields are ignored; a known field of the wrong type or out of bounds is a 400
naming it in `param`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest

from .errors import ApiError, bad_request

MAX_BODY_BYTES = 1_000_000
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_CONTENT_CHARS = 32_000
MAX_INSTRUCTIONS_CHARS = 256_000
MAX_MESSAGES = 100  # per thread creation, or per run's additional_messages
ROLES = ("user", "assistant")


@dataclass(frozen=True)
class MessageInput:
    role: str
    parts: list[str]  # text blocks, in order
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInput:
    assistant_id: str
    model: str | None
    instructions: str | None
    additional_instructions: str | None
    additional_messages: list[MessageInput]
    metadata: dict[str, str]


@dataclass(frozen=True)
class ListQuery:
    limit: int
    order: str
    after: str | None
    before: str | None


# ----------------------------------------------------------------------- bodies


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object; an empty body is an empty object."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    raw = request.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise _too_large()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad_request(
            "We could not parse the JSON body of your request. Send a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _too_large() -> ApiError:
    return ApiError(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.")


def optional_str(body: dict[str, Any], name: str, *, max_length: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string.", param=name)
    if len(value) > max_length:
        raise bad_request(f"'{name}' must be at most {max_length} characters.", param=name)
    return value


def required_str(body: dict[str, Any], name: str, *, max_length: int) -> str:
    value = optional_str(body, name, max_length=max_length)
    if not value:
        raise bad_request(f"Missing required parameter: '{name}'.", param=name)
    return value


def optional_bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false.", param=name)
    return value


def optional_object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"'{name}' must be an object.", param=name)
    return value


def metadata(body: dict[str, Any], name: str = "metadata") -> dict[str, str] | None:
    """The metadata object, or None when absent (or null): leave it as it is."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request(f"'{name}' must be an object of string keys and values.", param=name)
    if len(value) > MAX_METADATA_PAIRS:
        raise bad_request(
            f"'{name}' can have at most {MAX_METADATA_PAIRS} key-value pairs.", param=name
        )
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise bad_request(
                f"'{name}' keys must be at most {MAX_METADATA_KEY} characters.", param=name
            )
        if not isinstance(item, str):
            raise bad_request(f"'{name}' values must be strings.", param=f"{name}.{key}")
        if len(item) > MAX_METADATA_VALUE:
            raise bad_request(
                f"'{name}' values must be at most {MAX_METADATA_VALUE} characters.",
                param=f"{name}.{key}",
            )
    return dict(value)


def no_tools(body: dict[str, Any]) -> None:
    """Threadsite runs no tools: saying otherwise would silently change what runs do."""
    tools = body.get("tools")
    if tools is None or tools == []:
        return
    if not isinstance(tools, list):
        raise bad_request("'tools' must be an array.", param="tools")
    raise bad_request(
        "This server runs no tools (code_interpreter, file_search, functions): send "
        "'tools' empty or leave it out.",
        param="tools",
        code="unsupported_parameter",
    )


def message_content(value: Any, param: str) -> list[str]:
    """Text blocks from `content`: a string, or a list of {"type": "text", "text": str}."""
    if isinstance(value, str) and value:
        parts = [value]
    elif isinstance(value, list) and value:
        parts = []
        for index, part in enumerate(value):
            where = f"{param}[{index}]"
            if not isinstance(part, dict):
                raise bad_request(f"'{where}' must be an object.", param=where)
            if part.get("type") != "text":
                raise bad_request(
                    f"'{where}.type' must be 'text': this server keeps text only.",
                    param=f"{where}.type",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request(f"'{where}.text' must be a string.", param=f"{where}.text")
            parts.append(text)
    else:
        raise bad_request(
            f"'{param}' must be a non-empty string or array of text parts.", param=param
        )
    if sum(len(part) for part in parts) > MAX_CONTENT_CHARS:
        raise bad_request(f"'{param}' must be at most {MAX_CONTENT_CHARS} characters.", param=param)
    return parts


def message_input(value: Any, param: str = "") -> MessageInput:
    """A message to add: {"role", "content", "metadata"?}; `param` is where it sits in
    the body ("" for the body itself)."""
    where = f"{param}." if param else ""
    if not isinstance(value, dict):
        raise bad_request(f"'{param}' must be an object.", param=param)
    role = value.get("role")
    if role not in ROLES:
        raise bad_request(f"'{where}role' must be 'user' or 'assistant'.", param=f"{where}role")
    if "content" not in value:
        raise bad_request(f"Missing required parameter: '{where}content'.", param=f"{where}content")
    return MessageInput(
        role=role,
        parts=message_content(value["content"], f"{where}content"),
        metadata=metadata(value, "metadata") or {},
    )


def message_list(body: dict[str, Any], name: str) -> list[MessageInput]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request(f"'{name}' must be an array.", param=name)
    if len(value) > MAX_MESSAGES:
        raise bad_request(f"'{name}' can hold at most {MAX_MESSAGES} messages.", param=name)
    return [message_input(item, f"{name}[{index}]") for index, item in enumerate(value)]


def run_input(body: dict[str, Any]) -> RunInput:
    no_tools(body)
    return RunInput(
        assistant_id=required_str(body, "assistant_id", max_length=128),
        model=optional_str(body, "model", max_length=256),
        instructions=optional_str(body, "instructions", max_length=MAX_INSTRUCTIONS_CHARS),
        additional_instructions=optional_str(
            body, "additional_instructions", max_length=MAX_INSTRUCTIONS_CHARS
        ),
        additional_messages=message_list(body, "additional_messages"),
        metadata=metadata(body) or {},
    )


# ----------------------------------------------------------------- query strings


def list_query(request: HttpRequest) -> ListQuery:
    raw_limit = request.GET.get("limit", "20")
    if not (raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= 100):
        raise bad_request("'limit' must be an integer between 1 and 100.", param="limit")
    order = request.GET.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("'order' must be 'asc' or 'desc'.", param="order")
    after = request.GET.get("after") or None
    before = request.GET.get("before") or None
    if after and before:
        raise bad_request("Send 'after' or 'before', not both.", param="before")
    return ListQuery(limit=int(raw_limit), order=order, after=after, before=before)
