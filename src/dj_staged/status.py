"""The staged writes in flight, read from the leases in the stores: what ``dj-staged status`` shows.

Every staged write holds a lease in each store it writes to
(``_staging/_leases/{schema}/{lease_id}/``, see :mod:`dj_staged.leases`): who
writes (host, process id, database session), which table, and for each field
of each row the primary key and the paths being written. A write is **live**
while its database lock is held, and **abandoned** once its writer will never
finish it: *interrupted* (its block ended by ``KeyboardInterrupt``/``SystemExit``,
which marks the lease) or *writer gone* (the lock is gone without that mark: the
writer was killed or lost its database session). What an abandoned write left is
what ``dj-staged gc`` reclaims.

An abandoned write inside ``populate(reserve_jobs=True)`` leaves its job in
DataJoint's jobs table as ``error`` (interrupted) or ``reserved`` (writer gone),
and populate skips such a job until it is released; :class:`WaitingJob` lists
them, with the call that releases them.

Leases have no heartbeat (liveness is the lock), so there is no renewal time
to show; the *last update* of a write is the newest modification time among
its lease's files and the files it has staged so far.

Per store, in this order: one listing of ``_staging/_leases/`` (the leases of
every schema), one query for the lease locks held, one concurrent read of the
lease files, then, for the bytes staged so far, one listing per data section
and schema with writes in flight, of the narrowest folder that holds them all
(where the store lists them, also that folder's incomplete uploads, the part of a large file
not yet completed). A lease whose files vanished between the listing and the
read has ended and is not shown. For the jobs, one query per table with
abandoned writes, and one for the database sessions alive.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._datajoint import Config, Connection, class_name_of, config_of, free_table, list_schemas
from .settings import resume_window
from .stores import StagedStore, StoredFile, resolve_store
from .text import count, human_bytes, iso, table, utc

if TYPE_CHECKING:
    from .leases import LeaseEntry, LeaseRecord
    from .leases.records import LeaseFiles

logger = logging.getLogger(__name__)

LIVE, ABANDONED, UNREADABLE = "live", "abandoned", "unreadable"
INTERRUPTED, WRITER_GONE = "interrupted", "writer gone"  # how an abandoned write ended
RESUMABLE = "resumable"  # an abandoned resume=True write, kept for the next attempt within its resume window
DEFAULT_WINDOW = 24 * 3600.0  # the collector's default grace period, the resume window's default


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
    how: str = ""  # for an abandoned write: INTERRUPTED, WRITER_GONE or RESUMABLE
    durable: int | None = None  # a resumable write's bytes made durable (its last checkpoint)
    resumable_until: float | None = None  # when its resume window ends (with the default window)

    @property
    def class_name(self) -> str:
        """The table's class name (``Analysis`` for ``__analysis``)."""
        return class_name(self.table)

    @property
    def state_text(self) -> str:
        """``live``, ``abandoned (interrupted)``, ``abandoned (writer gone)``, ``unreadable``."""
        return f"{self.state} ({self.how})" if self.how else self.state

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "schema": self.schema,
            "table": self.table,
            "class_name": self.class_name if self.table else "",
            "field": self.field,
            "key": self.key,
            "host": self.host,
            "pid": self.pid,
            "db_pid": self.db_pid,
            "lease_id": self.lease_id,
            "state": self.state,
            "how": self.how,
            "started": iso(self.started),
            "lease_started": iso(self.lease_started),
            "last_update": iso(self.last_update),
            "paths": list(self.paths),
            "files": self.files,
            "bytes": self.bytes,
            "durable": self.durable,
            "resumable_until": iso(self.resumable_until),
        }


@dataclass
class WaitingJob:
    """A job of DataJoint's jobs table that ``populate(reserve_jobs=True)`` skips, left by an abandoned staged write.

    ``status`` is ``error`` (the write was interrupted: populate recorded the
    ``KeyboardInterrupt``) or ``reserved`` (the writer is gone and so is the
    database session that reserved the job). :attr:`release` is the call that
    deletes the job, so that the next ``populate`` makes the key again.
    """

    schema: str
    table: str
    key: dict[str, Any]
    status: str
    error_message: str = ""
    host: str = ""
    pid: int = 0

    @property
    def class_name(self) -> str:
        return class_name(self.table)

    @property
    def release(self) -> str:
        """The Python call that releases this job (with the pipeline's table class in scope)."""
        return release_call(self.class_name, self.status, [self.key])

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "table": self.table,
            "class_name": self.class_name,
            "key": self.key,
            "status": self.status,
            "error_message": self.error_message,
            "host": self.host,
            "pid": self.pid,
            "release": self.release,
        }


def release_call(class_name: str, status: str, keys: list[dict[str, Any]]) -> str:
    """``(Analysis.jobs.errors & [{'source_id': 3}]).delete()``: deletes exactly these jobs of that status."""
    which = {"error": "errors", "reserved": "reserved"}[status]
    return f"({class_name}.jobs.{which} & {keys!r}).delete()"


@dataclass
class Status:
    """Every staged write found in the stores looked at, and the populate jobs its abandoned writes hold."""

    stores: list[str]
    writes: list[StagedWrite] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    jobs: list[WaitingJob] = dataclasses.field(default_factory=list)

    @property
    def states(self) -> Counter[str]:
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
        parts = [f"{states[s]} {s}" for s in (LIVE, ABANDONED, UNREADABLE) if states[s]]
        text = f"{count(len(self.writes), 'staged write')} {where}: {', '.join(parts)}"
        text += f"; {human_bytes(self.bytes)} staged."
        if states[ABANDONED] or states[UNREADABLE]:
            text += " What abandoned writes left is reclaimed by `dj-staged gc --delete`."
        if self.jobs:
            verb = "waits" if len(self.jobs) == 1 else "wait"
            text += f" {count(len(self.jobs), 'populate job')} {verb} to be released (below)."
        return text

    def format(self) -> str:
        """The summary line, then one line per write, then the jobs to release and how."""
        lines = [self.summary()]
        if self.writes:
            header = ["store", "schema", "table", "field", "key", "host", "pid", "state", "started", "last update"]
            header.append("staged")
            rows = [
                [
                    w.store,
                    w.schema,
                    _table_text(w.table),
                    w.field or "-",
                    _key_text(w.key),
                    w.host or "-",
                    w.pid or "-",
                    w.state_text,
                    utc(w.started),
                    utc(w.last_update),
                    f"{human_bytes(w.bytes)} ({count(w.files, 'file')})",
                ]
                for w in self.writes
            ]
            lines += ["", *table(header, rows, right=[6])]
        if self.jobs:
            lines += [
                "",
                "populate(reserve_jobs=True) skips these jobs until they are released (their write was abandoned):",
            ]
            rows = [
                [
                    j.schema,
                    _table_text(j.table),
                    _key_text(j.key),
                    j.status,
                    j.host or "-",
                    j.pid or "-",
                    j.error_message.split("\n", 1)[0][:60] or "-",
                ]
                for j in self.jobs
            ]
            header = ["schema", "table", "key", "job", "host", "pid", "error"]
            lines += ["  " + line for line in table(header, rows, right=[5])]
            lines += ["release them in Python (where your table classes are defined), then run populate again:"]
            lines += ["  " + call for call in self.release_calls()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def release_calls(self) -> list[str]:
        """One call per table and job status, each deleting exactly the jobs listed."""
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for job in self.jobs:
            grouped.setdefault((job.class_name, job.status), []).append(job.key)
        return [release_call(name, status, keys) for (name, status), keys in grouped.items()]

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "stores": list(self.stores),
            "states": dict(sorted(self.states.items())),
            "bytes": self.bytes,
            "writes": [write.as_dict() for write in self.writes],
            "jobs": [job.as_dict() for job in self.jobs],
            "notes": list(self.notes),
        }


def class_name(table_name: str) -> str:
    """The class name DataJoint derives a table name from: ``__analysis`` → ``Analysis``, ``a__b`` → ``A.B``."""
    parts = table_name.lstrip("#_~").split("__")
    return ".".join(class_name_of(part) for part in parts if part)


def _table_text(table_name: str) -> str:
    """``Recording``; with the SQL name when it says more than the class name: ``Analysis (__analysis)``."""
    if not table_name:
        return "-"
    name = class_name(table_name)
    return name if name.lower() == table_name else f"{name} ({table_name})"


def _key_text(key: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in key.items()) or "-"


def in_flight(
    connection: Connection,
    stores: Sequence[str] | None = None,
    schemas: Sequence[str] | None = None,
    config: Config | None = None,
) -> Status:
    """The staged writes in flight in ``stores`` (default: every configured store), for ``schemas``.

    Without ``schemas``, every schema the connection can list that has leases
    in the store; leases of schemas it cannot list are counted in a note (their
    locks may live in another database, so their state cannot be told here).
    """
    config = config if config is not None else config_of(connection)
    names = list(stores) if stores else configured_stores(config.stores)
    wanted = set(schemas) if schemas else None
    listable: set[str] | None = None
    status = Status(stores=names)
    from .leases.records import list_lease_files

    for store in names:
        staged_store = resolve_store(store, config)  # one not configured, or wrongly, is an error naming it
        started = time.perf_counter()
        folders = list_lease_files(staged_store)  # every schema's
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
        writes = _writes(connection, staged_store, folders)
        status.writes.extend(writes)
        logger.info(
            "Store %s: %d leases, %d staged writes, read in %.2f s",
            store,
            len(folders),
            len(writes),
            time.perf_counter() - started,
        )
    status.writes.sort(key=lambda w: (w.store, w.schema, w.started or 0.0, w.table, w.field))
    status.jobs = waiting_jobs(connection, status.writes)
    return status


def configured_stores(stores: dict[str, Any]) -> list[str]:
    """Names of the stores in ``dj.config.stores`` (the ``default`` pointers are not stores)."""
    return sorted(name for name, spec in stores.items() if isinstance(spec, dict))


def _listable(connection: Connection) -> set[str]:
    return list_schemas(connection)


def _writes(connection: Connection, staged_store: StagedStore, folders: LeaseFiles) -> list[StagedWrite]:
    from .leases import held_lease_keys
    from .leases.records import read_leases

    if not folders:
        return []
    held = held_lease_keys(connection)  # after the listing: a lease listed then is live now or has ended
    store = staged_store.name
    records = read_leases(staged_store, folders, skip_ended=True)
    staged = _staged_files(staged_store, [p for r in records if r.readable for p in r.paths])
    writes = []
    for record in records:
        if not record.readable:
            writes.append(_write(record, store, UNREADABLE, None, [], []))
            continue
        state = LIVE if record.lock in held and not record.abandoned else ABANDONED
        how = "" if state == LIVE else INTERRUPTED if record.abandoned else WRITER_GONE
        if state == ABANDONED and record.resumable and not record.abandoned:
            how = RESUMABLE
        for entry in record.entries:
            written = [f for path in entry.paths for f in staged.get(path, [])]
            write = _write(record, store, state, entry, entry.paths, written, how)
            if record.resumable:
                checkpoint = record.checkpoints.get(entry.field) or {}
                write.durable = int(checkpoint.get("durable") or 0)
                last = record.newest if record.newest is not None else record.started
                if how == RESUMABLE and last:
                    write.resumable_until = last + resume_window(DEFAULT_WINDOW)
            writes.append(write)
    return writes


def _write(
    record: LeaseRecord,
    store: str,
    state: str,
    entry: LeaseEntry | None,
    paths: list[str],
    files: list[StoredFile],
    how: str = "",
) -> StagedWrite:
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
        how=how,
    )


def waiting_jobs(connection: Connection, writes: Sequence[StagedWrite]) -> list[WaitingJob]:
    """The jobs of DataJoint's jobs tables that abandoned ``writes`` left for ``populate`` to skip.

    A job matches a write when its key is the write's key (on the job's key
    attributes). An ``error`` job always waits; a ``reserved`` one only when its
    worker is gone: the database session that reserved it has ended and, if the
    worker ran on this machine, so has its process (DataJoint records the session
    of the reservation, which a worker that reconnected no longer uses).
    """
    keys: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for write in writes:
        if write.state == ABANDONED and write.table:
            keys.setdefault((write.schema, write.table), []).append(write.key)
    if not keys:
        return []
    alive = {pid for (pid,) in connection.query("SELECT pid FROM pg_stat_activity").fetchall()}
    found = []
    for (schema, table_name), wanted in sorted(keys.items()):
        for job in _jobs_of(connection, schema, table_name):
            if job.status == "reserved" and (job.connection_id in alive or _process_alive(job.host, job.pid)):
                continue
            if any(all(str(key.get(k)) == str(v) for k, v in job.key.items()) for key in wanted):
                found.append(WaitingJob(schema, table_name, job.key, job.status, job.error_message, job.host, job.pid))
    return found


def _process_alive(host: str, pid: int) -> bool:
    """Whether process ``pid`` of ``host`` runs, as far as this machine can tell (another host's: not known)."""
    if host != platform.node() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


@dataclass
class _Job:
    key: dict[str, Any]
    status: str
    error_message: str
    host: str
    pid: int
    connection_id: int


def _jobs_of(connection: Connection, schema: str, table_name: str) -> list[_Job]:
    """The ``reserved`` and ``error`` jobs of the jobs table of ``schema.table_name``, if it has one."""
    if not table_name.startswith("_"):  # only Imported (_name) and Computed (__name) tables have jobs
        return []
    quote = connection.adapter.quote_identifier
    full_name = f"{quote(schema)}.{quote('~~' + table_name.lstrip('_'))}"
    if connection.query("SELECT to_regclass(%s)", args=(full_name,)).fetchone()[0] is None:
        return []
    primary_key = free_table(connection, full_name).heading.primary_key
    columns = ", ".join(quote(name) for name in [*primary_key, "status", "error_message", "host", "pid"])
    rows = connection.query(
        f"SELECT {columns}, {quote('connection_id')} FROM {full_name} WHERE {quote('status')} IN ('reserved', 'error')"
    ).fetchall()
    width = len(primary_key)
    return [_Job(dict(zip(primary_key, row[:width], strict=True)), *row[width : width + 5]) for row in rows]


def _staged_files(store: StagedStore, paths: Iterable[str]) -> dict[str, list[StoredFile]]:
    """The files under each leased path (or its sidecars), from one listing per section and schema."""
    paths = sorted(set(paths))
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault("/".join(path.split("/")[:2]), []).append(path)
    wanted = set(paths)
    found: dict[str, list[StoredFile]] = {}
    for members in groups.values():
        folder = _common_folder(members)
        listed = list(store.list_files(folder).values())
        if store.supports_listing_incomplete_uploads:
            listed += [StoredFile(u.path, u.size, u.started) for u in store.incomplete_uploads(folder).values()]
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
