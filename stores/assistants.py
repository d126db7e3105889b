"""Assistants, kept beside the threads (not inside the thread root): one JSON file each.

Assistants are few (tens, not thousands), so listing reads them all; writes are whole-file
publishes under one directory lock, like every other record.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from . import files
from .errors import AlreadyExists, AssistantNotFound, StoreError, StoreIOError
from .files import BadRecord, Missing
from .ids import is_safe_id, new_id
from .records import now

LOCK = ".lock"


@dataclass
class Assistant:
    id: str
    created_at: int
    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _KNOWN = frozenset(
        {"id", "object", "created_at", "model", "name", "description", "instructions",
         "metadata", "tools", "tool_resources", "temperature", "top_p", "response_format"}
    )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.id,
            "object": "assistant",
            "created_at": self.created_at,
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "instructions": self.instructions,
            "tools": [],
            "tool_resources": {},
            "metadata": dict(self.metadata),
            "temperature": self.extra.get("temperature", 1.0),
            "top_p": self.extra.get("top_p", 1.0),
            "response_format": "auto",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        metadata = data.get("metadata")
        return cls(
            id=str(data["id"]),
            created_at=int(data.get("created_at") or 0),
            model=str(data.get("model") or ""),
            name=data.get("name"),
            description=data.get("description"),
            instructions=data.get("instructions"),
            metadata={str(k): str(v) for k, v in metadata.items()}
            if isinstance(metadata, dict)
            else {},
            extra={k: v for k, v in data.items() if k not in cls._KNOWN},
        )


def new_assistant(
    *,
    model: str,
    name: str | None = None,
    description: str | None = None,
    instructions: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Assistant:
    return Assistant(
        id=new_id("asst"),
        created_at=now(),
        model=model,
        name=name,
        description=description,
        instructions=instructions,
        metadata=dict(metadata or {}),
    )


class AssistantStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreIOError(f"opening the assistants at {self.root}", error) from error

    @contextmanager
    def _dir(self, action: str, *, locked: bool = False) -> Any:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if locked:
                    with files.exclusive_lock(fd, LOCK):
                        yield fd
                else:
                    yield fd
            finally:
                os.close(fd)
        except BadRecord as error:
            raise StoreIOError(action, OSError(0, f"damaged record {error}")) from None
        except OSError as error:
            raise StoreIOError(action, error) from error

    def create_assistant(self, assistant: Assistant) -> Assistant:
        if not is_safe_id(assistant.id):
            raise StoreError(
                f"Refusing to create an assistant with the unsafe ID {assistant.id!r}."
            )
        with self._dir(f"creating assistant {assistant.id}", locked=True) as fd:
            try:
                files.write_record(fd, f"{assistant.id}.json", assistant.to_dict(), exclusive=True)
            except FileExistsError:
                raise AlreadyExists(assistant.id) from None
        return assistant

    def get_assistant(self, assistant_id: str) -> Assistant:
        if not is_safe_id(assistant_id):
            raise AssistantNotFound(assistant_id)
        with self._dir(f"reading assistant {assistant_id}") as fd:
            return self._read(fd, assistant_id)

    def _read(self, fd: int, assistant_id: str) -> Assistant:
        try:
            return Assistant.from_dict(files.read_json(fd, f"{assistant_id}.json"))
        except Missing:
            raise AssistantNotFound(assistant_id) from None
        except (KeyError, TypeError, ValueError) as error:
            raise BadRecord(f"{assistant_id}.json: {error!r}") from None

    def list_assistants(self) -> list[Assistant]:
        """Every assistant, oldest first."""
        with self._dir("listing assistants") as fd:
            found = []
            for name in files.list_names(fd):
                if name.endswith(".json") and is_safe_id(name[:-5]):
                    try:
                        found.append(self._read(fd, name[:-5]))
                    except (AssistantNotFound, BadRecord):
                        continue
        return sorted(found, key=lambda assistant: (assistant.created_at, assistant.id))

    def update_assistant(self, assistant_id: str, **changes: Any) -> Assistant:
        """Change the named fields (model, name, description, instructions, metadata)."""
        if not is_safe_id(assistant_id):
            raise AssistantNotFound(assistant_id)
        with self._dir(f"updating assistant {assistant_id}", locked=True) as fd:
            assistant = replace(self._read(fd, assistant_id), **changes)
            files.write_record(fd, f"{assistant_id}.json", assistant.to_dict(), exclusive=False)
            return assistant

    def delete_assistant(self, assistant_id: str) -> None:
        if not is_safe_id(assistant_id):
            raise AssistantNotFound(assistant_id)
        with self._dir(f"deleting assistant {assistant_id}", locked=True) as fd:
            self._read(fd, assistant_id)
            os.unlink(f"{assistant_id}.json", dir_fd=fd)
            os.fsync(fd)
