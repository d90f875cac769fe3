"""The staged writes in flight, read from the leases in the stores: what ``dj-staged status`` shows.

Every staged write holds a lease in each store it writes to
(``_staging/_leases/{schema}/{lease_id}/``, see :mod:`dj_staged.leases`): who
writes (host, process id, database session), which table, and for each field
of each row the primary key and the paths being written. A lease is **live**
while its database lock is held, **abandoned** when its block ended by
``KeyboardInterrupt``/``SystemExit``, and **expired** when its lock is gone
without that mark (the writer was killed or lost its database session).
Expired and abandoned writes are what ``dj-staged gc`` reclaims.

Leases have no heartbeat (liveness is the lock), so there is no renewal time
to show; the *last update* of a write is the newest modification time among
its lease's files and the files it has staged so far.

Per store, in this order: one listing of ``_staging/_leases/`` (the leases of
every schema), one query for the lease locks held, one concurrent read of the
lease files, then, for the bytes staged so far, one listing per data section
and schema with writes in flight, of the narrowest folder that holds them all
(on S3 also that folder's incomplete multipart uploads, the part of a large file
not yet completed). A lease whose files vanished between the listing and the
read has ended and is not shown.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._datajoint import config_of
from .layout import LEASES_ROOT
from .listing import StoredFile, list_files
from .text import count, human_bytes, iso, table, utc

logger = logging.getLogger(__name__)

LIVE, EXPIRED, ABANDONED, UNREADABLE = "live", "expired", "abandoned", "unreadable"


@dataclass
class StagedWrite:
    """One field of one row being written by a staged insert, as its lease describes it."""

    store: str
    schema: str
    table: str
    field: str
    key: dict[str, Any]
    host: str
    pid: int
    db_pid: int
    lease_id: str
    state: str
    started: float | None
    lease_started: float | None
    last_update: float | None
    paths: list[str] = dataclasses.field(default_factory=list)
    files: int = 0
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "schema": self.schema,
            "table": self.table,
            "field": self.field,
            "key": self.key,
            "host": self.host,
            "pid": self.pid,
            "db_pid": self.db_pid,
            "lease_id": self.lease_id,
            "state": self.state,
            "started": iso(self.started),
            "lease_started": iso(self.lease_started),
            "last_update": iso(self.last_update),
            "paths": list(self.paths),
            "files": self.files,
            "bytes": self.bytes,
        }


@dataclass
class Status:
    """Every staged write found in the stores looked at."""

    stores: list[str]
    writes: list[StagedWrite] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def states(self) -> Counter:
        return Counter(write.state for write in self.writes)

    @property
    def bytes(self) -> int:
        return sum(write.bytes for write in self.writes)

    def summary(self) -> str:
        """One sentence a person reads first."""
        where = f"in {count(len(self.stores), 'store')} ({', '.join(self.stores)})" if self.stores else "(no stores)"
        if not self.writes:
            return f"No staged writes in flight {where}."
        states = self.states
        parts = [f"{states[s]} {s}" for s in (LIVE, EXPIRED, ABANDONED, UNREADABLE) if states[s]]
        text = f"{count(len(self.writes), 'staged write')} {where}: {', '.join(parts)}"
        text += f"; {human_bytes(self.bytes)} staged."
        if states[EXPIRED] or states[ABANDONED] or states[UNREADABLE]:
            text += " What expired or abandoned writes left is reclaimed by `dj-staged gc`."
        return text

    def format(self) -> str:
        """The summary line, then one line per write."""
        lines = [self.summary()]
        if self.writes:
            header = ["store", "schema", "table", "field", "key", "host", "pid", "state", "started", "last update"]
            header.append("staged")
            rows = [
                [
                    w.store,
                    w.schema,
                    w.table or "-",
                    w.field or "-",
                    _key_text(w.key),
                    w.host or "-",
                    w.pid or "-",
                    w.state,
                    utc(w.started),
                    utc(w.last_update),
                    f"{human_bytes(w.bytes)} ({count(w.files, 'file')})",
                ]
                for w in self.writes
            ]
            lines += ["", *table(header, rows, right=[6])]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "stores": list(self.stores),
            "states": dict(sorted(self.states.items())),
            "bytes": self.bytes,
            "writes": [write.as_dict() for write in self.writes],
            "notes": list(self.notes),
        }


def _key_text(key: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in key.items()) or "-"


def in_flight(
    connection: Any,
    stores: Sequence[str] | None = None,
    schemas: Sequence[str] | None = None,
    config: Any = None,
) -> Status:
    """The staged writes in flight in ``stores`` (default: every configured store), for ``schemas``.

    Without ``schemas``, every schema the connection can list that has leases
    in the store; leases of schemas it cannot list are counted in a note (their
    locks may live in another database, so their state cannot be told here).
    """
    from datajoint.hash_registry import get_store_backend

    config = config if config is not None else config_of(connection)
    names = list(stores) if stores else configured_stores(config.stores)
    wanted = set(schemas) if schemas else None
    listable: set[str] | None = None
    status = Status(stores=names)
    for store in names:
        config.get_store_spec(store)  # a store that is not configured, or wrongly, is an error naming it
        backend = get_store_backend(store, config=config)
        started = time.perf_counter()
        folders = _lease_folders(backend)
        if wanted is None:
            if listable is None:
                listable = _listable(connection)
            hidden = sorted({schema for schema, _ in folders} - listable)
            if hidden:
                status.notes.append(
                    f"store {store}: leases of {count(len(hidden), 'schema')} this connection cannot list were "
                    f"left out ({', '.join(hidden)})"
                )
        keep = wanted if wanted is not None else listable
        folders = {k: v for k, v in folders.items() if k[0] in (keep or set())}
        writes = _writes(connection, backend, store, folders)
        status.writes.extend(writes)
        logger.info(
            "Store %s: %d leases, %d staged writes, read in %.2f s",
            store,
            len(folders),
            len(writes),
            time.perf_counter() - started,
        )
    status.writes.sort(key=lambda w: (w.store, w.schema, w.started or 0.0, w.table, w.field))
    return status


def configured_stores(stores: dict[str, Any]) -> list[str]:
    """Names of the stores in ``dj.config.stores`` (the ``default`` pointers are not stores)."""
    return sorted(name for name, spec in stores.items() if isinstance(spec, dict))


def _listable(connection: Any) -> set[str]:
    import datajoint as dj

    return set(dj.list_schemas(connection=connection))


def _lease_folders(backend: Any) -> dict[tuple[str, str], dict[str, float | None]]:
    """One listing of every schema's leases: (schema, lease id) → file name → modification time."""
    folders: dict[tuple[str, str], dict[str, float | None]] = {}
    for path, stored in list_files(backend, LEASES_ROOT).items():
        parts = path[len(LEASES_ROOT) + 1 :].split("/")
        if len(parts) == 3:
            folders.setdefault((parts[0], parts[1]), {})[parts[2]] = stored.mtime
    return folders


def _writes(
    connection: Any, backend: Any, store: str, folders: dict[tuple[str, str], dict[str, float | None]]
) -> list[StagedWrite]:
    from .leases import held_lease_keys
    from .leases.records import read_leases

    if not folders:
        return []
    held = held_lease_keys(connection)  # after the listing: a lease listed then is live now or has ended
    records = read_leases(backend, folders, skip_ended=True)
    staged = _staged_files(backend, [p for r in records if r.readable for p in r.paths])
    writes = []
    for record in records:
        if not record.readable:
            writes.append(_write(record, store, UNREADABLE, None, [], []))
            continue
        state = ABANDONED if record.abandoned else LIVE if record.lock in held else EXPIRED
        for entry in record.entries:
            written = [f for path in entry.paths for f in staged.get(path, [])]
            writes.append(_write(record, store, state, entry, entry.paths, written))
    return writes


def _write(record: Any, store: str, state: str, entry: Any, paths: list[str], files: list[StoredFile]) -> StagedWrite:
    times = [t for t in [record.newest, *(f.mtime for f in files)] if t is not None]
    return StagedWrite(
        store=store,
        schema=record.schema,
        table=record.table,
        field=entry.field if entry is not None else "",
        key=dict(entry.key) if entry is not None else {},
        host=record.host,
        pid=record.pid,
        db_pid=record.db_pid,
        lease_id=record.lease_id,
        state=state,
        started=entry.at if entry is not None else None,
        lease_started=record.started or None,
        last_update=max(times) if times else None,
        paths=list(paths),
        files=len(files),
        bytes=sum(f.size for f in files),
    )


def _staged_files(backend: Any, paths: Iterable[str]) -> dict[str, list[StoredFile]]:
    """The files under each leased path (or its sidecars), from one listing per section and schema."""
    paths = sorted(set(paths))
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault("/".join(path.split("/")[:2]), []).append(path)
    wanted = set(paths)
    found: dict[str, list[StoredFile]] = {}
    for members in groups.values():
        folder = _common_folder(members)
        listed = list(list_files(backend, folder).values())
        if backend.protocol == "s3":
            from .gc.uploads import list_uploads

            listed += [stored for stored, _key in list_uploads(backend, folder).values()]
        for stored in listed:
            owner = _owner(stored.path, wanted)
            if owner is not None:
                found.setdefault(owner, []).append(stored)
    return found


def _common_folder(paths: list[str]) -> str:
    """The deepest folder that holds every path."""
    parents = [path.split("/")[:-1] for path in paths]
    common = parents[0]
    for parent in parents[1:]:
        length = 0
        while length < min(len(common), len(parent)) and common[length] == parent[length]:
            length += 1
        common = common[:length]
    return "/".join(common)


def _owner(path: str, wanted: set[str]) -> str | None:
    """The leased path ``path`` belongs to: itself, a folder above it, or a file it is a sidecar of."""
    if path in wanted:
        return path
    for index, char in enumerate(path):
        if char in "/." and path[:index] in wanted:
            return path[:index]
    return None
