"""Removing objects a writer promoted for a row that was never committed, under the collector's rules.

A canonical hash object a writer promoted may meanwhile be shared: another
writer may have leased it to deduplicate onto it, or a committed row may
reference it. So the writer removes it the way the collector does: holding the
schema's gate exclusively, after reading the other leases and the references.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .._datajoint import Connection
from ..references import referencing
from ..stores.base import StagedStore
from .locks import exclusive_gate, held_lease_keys
from .records import LeaseRecord, scan_leases

logger = logging.getLogger(__name__)


def covers(leased: Iterable[str], path: str) -> bool:
    """True if ``path`` is a leased path, lies under one, or is a sidecar of one (``.manifest.json``, ``.framed``)."""
    for held in leased:
        held = held.rstrip("/")
        if path == held or path.startswith((held + "/", held + ".")):
            return True
    return False


def live_paths(records: Iterable[LeaseRecord], held: set[int], exclude: str | None = None) -> list[str] | None:
    """Paths of the live leases (lock held), or None when a live-looking lease cannot be read."""
    paths: list[str] = []
    for record in records:
        if record.lease_id == exclude:
            continue
        if not record.readable:
            if record.lock in held:
                continue  # a header being written names only paths its writer is about to create
            return None  # corrupt: its paths are unknown
        if record.lock in held:
            paths.extend(record.paths)
    return paths


def reclaim(
    connection: Connection, store: StagedStore, schema: str, paths: list[str], *, exclude_lease: str
) -> list[str]:
    """Delete those of ``paths`` no other live lease covers and no row references; return the deleted ones."""
    if not paths:
        return []
    deleted = []
    with exclusive_gate(connection, schema) as gate:
        live = live_paths(scan_leases(store, schema), held_lease_keys(gate.connection), exclude=exclude_lease)
        if live is None:
            logger.warning("Kept %s: a lease of %s could not be read; `dj-staged gc` decides later", paths, schema)
            return []
        referenced = referencing(gate.connection, schema, paths)
        for path in paths:
            if path in referenced or covers(live, path) or not store.exists(path):
                continue
            gate.confirm()
            store.remove(path)
            deleted.append(path)
    return deleted
