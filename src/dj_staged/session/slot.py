"""Per-field state of a staged insert: what was resolved when a handle was first asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datajoint.storage import StorageBackend


@dataclass
class FieldSlot:
    """One field being written through ``store()``/``open()``.

    ``state`` belongs to the field's participant (the lifecycle keeps its
    paths, tokens and hashers there); the session owns the rest. ``size`` is
    the content size the caller declared with ``open(..., size=N)``;
    ``options`` carries codec-specific requests such as a streamed blob array.
    """

    field: str
    codec: Any
    participant: Any
    store_name: str
    spec: dict[str, Any]
    backend: StorageBackend
    ext: str | None
    primary_key: dict[str, Any]
    size: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    handles: list[Any] = field(default_factory=list)
