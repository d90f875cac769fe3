"""A resumed write takes over what an earlier attempt of the same row left, under the lease rules.

The earlier attempt's lease is dead (its writer was killed, lost its database
session, or was interrupted) and says it is resumable; every collector keeps
what it names for the resume window. A resumer of the same row:

1. holds the lease lock of its own block (taken with the key check, before
   anything else) and the resume key of the field it opens (a claim, see
   :mod:`~dj_staged.leases.claims`), so no other writer resumes the same field;
2. finds the dead resumable leases of the row in the field's store (one
   listing of the schema's leases) and claims the resume key of each of their
   fields too;
3. holding the schema's gate shared, records every path those leases name in
   its own lease (step ``writer.takeover`` is reached right after), with their
   last checkpoints beside;
4. only then removes the earlier leases' records.

No instant leaves the paths unprotected: until step 3 the earlier lease names
them (kept for resumption within its window), from step 3 on the resumer's
live lease does. A collector holds the gate exclusively from reading the
leases to its last deletion, so its window lies wholly before step 3 or wholly
after it: before, it may have reclaimed a write past its window, which the
resumer notices when it checks the durable prefix (after step 3) and starts
over; after, it sees a live lease. ``docs/spec.md`` has the full argument.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ..stores.base import StagedStore
from ..stores.resumable import Checkpoint
from .records import LeaseRecord, mark_abandoned, scan_leases

logger = logging.getLogger(__name__)


def key_text(key: dict[str, Any]) -> str:
    """A primary key as one comparable text (a lease records values as JSON, with ``str`` for the rest)."""
    return json.dumps({name: key[name] for name in sorted(key)}, sort_keys=True, default=str)


def resume_key(schema: str, table: str, key: dict[str, Any], field_name: str) -> str:
    """The resume key of a field: (schema, table, primary key, field), as the text its claim is made of."""
    return f"resume:{schema}\0{table}\0{key_text(key)}\0{field_name}"


@dataclass
class ResumePoint:
    """What an earlier attempt left for one field: the paths it leased, and its last checkpoints."""

    name: str  # the field's
    paths: list[str] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None  # the last checkpoint of a file written through open()
    key_checkpoints: list[dict[str, Any]] = field(default_factory=list)  # those of a store() directory
    taken_from: list[str] = field(default_factory=list)  # the lease ids it was taken from

    @property
    def path(self) -> str | None:
        """The path the checkpoints are of (None if the attempt made no checkpoint)."""
        if self.checkpoint is not None:
            return str(self.checkpoint.get("path"))
        if self.key_checkpoints:
            return str(self.key_checkpoints[0].get("path"))
        return None

    @property
    def store_checkpoint(self) -> Checkpoint | None:
        """The store's checkpoint of a file written through ``open()``."""
        if self.checkpoint is None or "checkpoint" not in self.checkpoint:
            return None
        return Checkpoint.from_dict(self.checkpoint["checkpoint"])

    def leftovers(self) -> list[str]:
        """The paths the attempt leased besides the one it recorded checkpoints of (markers, framed copies)."""
        return [path for path in self.paths if path != self.path]


def resumable_leases(store: StagedStore, schema: str, table: str, key: dict[str, Any], held: set[int]) -> list[Any]:
    """The dead, resumable leases of the row ``key`` of ``table`` in ``store``, oldest first."""
    wanted = key_text(key)
    found = []
    for record in scan_leases(store, schema):
        if not record.readable or not record.resumable or record.abandoned or record.lock in held:
            continue
        if record.table == table and any(key_text(entry.key) == wanted for entry in record.entries):
            found.append(record)
    return sorted(found, key=lambda record: (record.started, record.newest or 0.0))


def abandon_resumable(store: StagedStore, schema: str, lease_ids: list[str], held: set[int]) -> list[str]:
    """Drop interrupted resumable writes on purpose: mark each of ``lease_ids`` found in ``store`` for ``schema``
    abandoned, so no attempt resumes it and the next collection reclaims what it names at once; the ids marked.
    A live write (its lock ``held``) is left alone."""
    marked = []
    for record in scan_leases(store, schema):
        if record.lease_id in lease_ids and record.readable and record.lock not in held and not record.abandoned:
            mark_abandoned(store, record)
            marked.append(record.lease_id)
    return marked


def resume_points(records: list[LeaseRecord]) -> dict[str, ResumePoint]:
    """Per field, what ``records`` (oldest first) left; a later lease's checkpoints win."""
    points: dict[str, ResumePoint] = {}
    for record in records:
        for entry in record.entries:
            point = points.setdefault(entry.field, ResumePoint(entry.field))
            point.paths.extend(path for path in entry.paths if path not in point.paths)
            if record.lease_id not in point.taken_from:
                point.taken_from.append(record.lease_id)
        for name, doc in record.checkpoints.items():
            points.setdefault(name, ResumePoint(name)).checkpoint = doc
        for name, docs in record.key_checkpoints.items():
            point = points.setdefault(name, ResumePoint(name))
            if docs and point.key_checkpoints and docs[0].get("path") != point.key_checkpoints[0].get("path"):
                point.key_checkpoints = []  # a later attempt wrote another directory
            point.key_checkpoints.extend(docs)
    return points
