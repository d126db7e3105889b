"""Forms for threads: metadata pairs, a new thread, a user message.

Metadata follows the Assistants API's limits: at most 16 pairs, keys up to 64 characters,
values up to 512. The metadata forms render a fixed number of key/value rows; an "Add a
row" button posts the form back with one more row, so no JavaScript is needed.
"""

from __future__ import annotations

from typing import Any

from django import forms

MAX_MESSAGE_CHARS = 32_000
METADATA_MAX_PAIRS = 16
METADATA_KEY_MAX_CHARS = 64
METADATA_VALUE_MAX_CHARS = 512
METADATA_MIN_ROWS = 4
METADATA_SPARE_ROWS = 2  # blank rows offered below the existing pairs when editing
# Rows accepted back from a form: more than the pairs allowed, so that a thread written by
# another program with too many pairs can be edited down without losing any silently.
METADATA_MAX_ROWS = 64

ADD_ROW = "add_row"  # the name of the submit button that asks for one more row


class MessageTextField(forms.CharField):
    """Message text: line breaks normalised to \\n before the length is checked, so what a
    browser's maxlength allowed is what the server accepts."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_MESSAGE_CHARS)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 4}))
        error_messages = {
            "required": "Write a message first: it cannot be empty.",
            "max_length": (
                f"A message can be at most {MAX_MESSAGE_CHARS:,} characters; "
                "this one has %(show_value)d."
            ),
        }
        error_messages.update(kwargs.pop("error_messages", {}))
        super().__init__(error_messages=error_messages, **kwargs)

    def to_python(self, value: Any) -> str:
        text = super().to_python(value)
        return text.replace("\r\n", "\n").replace("\r", "\n")


class MessageForm(forms.Form):
    text = MessageTextField(
        label="Message",
        help_text=f"Posted as the user. Up to {MAX_MESSAGE_CHARS:,} characters.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "post-%s")
        super().__init__(*args, **kwargs)


class MetadataForm(forms.Form):
    """Key/value rows named key_0/value_0 ... key_<n-1>/value_<n-1>. After validation,
    `metadata` holds the pairs, in row order. A row with an empty key is left out (that
    is how a pair is removed); a value without a key is an error. The number of rows
    travels in a hidden "rows" input."""

    def __init__(
        self,
        data: Any = None,
        *,
        pairs: dict[str, str] | None = None,
        min_rows: int = METADATA_MIN_ROWS,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("auto_id", "meta-%s")
        pairs = pairs or {}
        self.adding_row = data is not None and ADD_ROW in data
        if data is None:
            count = min(len(pairs) + METADATA_SPARE_ROWS, max(len(pairs), METADATA_MAX_PAIRS))
        else:
            count = _row_count(data.get("rows"), min_rows)
            if self.adding_row and count < METADATA_MAX_PAIRS:
                count += 1
        count = max(count, min_rows)
        initial = dict(kwargs.pop("initial", None) or {})
        for index, (key, value) in enumerate(pairs.items()):
            initial[f"key_{index}"] = key
            initial[f"value_{index}"] = value
        super().__init__(data, initial=initial, **kwargs)
        self.row_count = count
        for index in range(count):
            self.fields[f"key_{index}"] = forms.CharField(
                label=f"Key {index + 1}",
                required=False,
                max_length=METADATA_KEY_MAX_CHARS,
                error_messages={
                    "max_length": f"Keys can be at most {METADATA_KEY_MAX_CHARS} characters."
                },
            )
            self.fields[f"value_{index}"] = forms.CharField(
                label=f"Value {index + 1}",
                required=False,
                max_length=METADATA_VALUE_MAX_CHARS,
                error_messages={
                    "max_length": f"Values can be at most {METADATA_VALUE_MAX_CHARS} characters."
                },
            )
        self.metadata: dict[str, str] = {}

    @property
    def can_add_row(self) -> bool:
        return self.row_count < METADATA_MAX_PAIRS

    def metadata_rows(self) -> list[tuple[forms.BoundField, forms.BoundField]]:
        return [(self[f"key_{i}"], self[f"value_{i}"]) for i in range(self.row_count)]

    def is_valid(self) -> bool:
        # "Add a row" only re-displays the form; it never saves anything.
        return not self.adding_row and super().is_valid()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        metadata: dict[str, str] = {}
        for index in range(self.row_count):
            key = cleaned.get(f"key_{index}")
            value = cleaned.get(f"value_{index}")
            if key is None or value is None:
                continue  # that field has its own error already
            if not key:
                if value:
                    self.add_error(f"key_{index}", "Give this value a key, or clear the value.")
                continue
            if key in metadata:
                self.add_error(f"key_{index}", f"The key “{key}” is used twice.")
                continue
            metadata[key] = value
        if len(metadata) > METADATA_MAX_PAIRS:
            self.add_error(
                None,
                f"A thread can have at most {METADATA_MAX_PAIRS} metadata pairs; "
                f"this has {len(metadata)}. Clear the keys of the ones to remove.",
            )
        self.metadata = metadata
        return cleaned


class NewThreadForm(MetadataForm):
    message = MessageTextField(
        label="First message (optional)",
        required=False,
        help_text="Posted as the user's first message.",
    )

    def __init__(self, data: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "new-%s")
        super().__init__(data, **kwargs)
        # The message goes after the metadata rows.
        self.order_fields([name for name in self.fields if name != "message"] + ["message"])


def _row_count(raw: object, default: int) -> int:
    try:
        count = int(str(raw))
    except ValueError:
        return default
    return count if 1 <= count <= METADATA_MAX_ROWS else default
