"""Lease records in a store: which paths a staged write in flight will reference.

A lease lives in the store it protects. On a store that appends (a local one) a lease that cannot be
resumed is one file, its header the first line and each later addition a line after it::

    _staging/_leases/{schema}/{lease_id}.jsonl           header, then entries, then {"abandoned": at} if so

It is created with one file and removed with one unlink: a folder's ``mkdir`` and
``rmdir`` besides cost a block of small rows an eighth to a quarter of its time on ext4,
where each fsync of the row's own folders commits them too. Any other lease is a folder::

    _staging/_leases/{schema}/{lease_id}/lease.json      who writes, the lease lock's key, the first paths
    _staging/_leases/{schema}/{lease_id}/entries.jsonl   paths added later, one line each (stores that append)
    _staging/_leases/{schema}/{lease_id}/{n:06d}.json    paths added later, one object each (object stores)
    _staging/_leases/{schema}/{lease_id}/abandoned.json  the block ended by KeyboardInterrupt/SystemExit
    _staging/_leases/{schema}/{lease_id}/resume-{field}.json           a resumable write's last checkpoint (a file)
    _staging/_leases/{schema}/{lease_id}/resume-{field}.{n:06d}.json   the files a resumable store() handle made
                                                                        durable since the previous one

An entry for a path the writer chose (``<filepath@>``) also gives the mark the
objects it places there will carry (see ``StagedStore.placement_mark``), recorded
before they are placed: a collector reclaims such a path only if what is there
still carries it.

A resumable write (``resume=True``) says so in its header, and records its
checkpoints beside its entries: the one checkpoint file of a field written
through ``open()`` is replaced as a whole each time its durable prefix grows (one
small object, read whole or not at all), and a ``store()`` directory adds one
numbered file per checkpoint. They name no path: the entries do.

Apart from those checkpoints nothing is ever rewritten: adding paths is one appended line on a store that
can append (a local one), or one small object elsewhere, however many paths the
lease already holds (a batch of many rows). A header or an addition that names a path that may
already exist is written while the writer holds the schema's gate shared; a
collector reads leases only while it holds the gate exclusively, so it never
sees half of those. One naming only paths the writer is about to create is
written without the gate and may be read half-written; it names paths that
have no bytes yet, so it is skipped without harm, and so is a half line a
killed writer left.

Whether a lease is live is not in the record: it is whether its lock is held
(see :mod:`dj_staged.leases.locks`). The lease id begins with the lock's key,
so a header a collector cannot read yet still tells whether its lease is live.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import IO, Any

from ..layout import LEASES_ROOT, lease_section
from ..stores.base import StagedStore

logger = logging.getLogger(__name__)

LEASE_VERSION = 2
HEADER = "lease.json"
JOURNAL = "entries.jsonl"
ABANDONED = "abandoned.json"
ONE_FILE_SUFFIX = ".jsonl"  # a lease that is one file: {lease_id}.jsonl
ONE_FILE = ""  # that file's name among a lease's files (no file in a folder has this name)
_ABANDONED_LINE = b'{"abandoned": '  # how the abandoned mark's line begins in a lease that is one file


@dataclass
class LeaseEntry:
    """Paths one field of one row adds to a lease."""

    field: str
    key: dict[str, Any]
    paths: list[str]
    at: float
    marks: dict[str, str] | None = None  # path -> the mark of what this write places there (a path it chose)
    taken_from: str | None = None  # the lease of an earlier attempt this resumed write took these paths over from


@dataclass
class LeaseRecord:
    """A lease as a collector or ``dj-staged status`` reads it back."""

    lease_id: str
    schema: str
    lock: int | None = None
    table: str = ""
    store: str = ""
    host: str = ""
    pid: int = 0
    db_pid: int = 0
    started: float = 0.0
    entries: list[LeaseEntry] = field(default_factory=list)
    abandoned: bool = False
    readable: bool = True
    files: list[str] = field(default_factory=list)
    newest: float | None = None
    resumable: bool = False  # the write may be resumed: kept for its resume window after its writer stopped
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> its last checkpoint (open())
    key_checkpoints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # field -> store()'s, in order
    one_file: bool = False  # the lease is one appended file, not a folder (see the module docstring)

    @property
    def paths(self) -> list[str]:
        """Every path the lease names."""
        return [path for entry in self.entries for path in entry.paths]

    @property
    def placements(self) -> dict[str, str]:
        """Every path the lease's write placed (or was about to place) at a path it chose, with its mark."""
        return {path: mark for entry in self.entries for path, mark in (entry.marks or {}).items()}

    @property
    def root(self) -> str:
        """Where the lease is in its store: its file, or its folder."""
        if self.one_file:
            return lease_path(self.schema, self.lease_id, ONE_FILE)
        return lease_folder(self.schema, self.lease_id)


def lease_id_for(key: int) -> str:
    """A new lease id that begins with its lock's key: ``{key:08x}-`` and 23 random hex digits."""
    return f"{key:08x}-{uuid.uuid4().hex[:23]}"


def key_in_id(lease_id: str) -> int | None:
    """The lock key a lease id begins with (None for an id of another form)."""
    head, dash, _rest = lease_id.partition("-")
    if not dash or len(head) != 8:
        return None
    try:
        return int(head, 16)
    except ValueError:
        return None


def lease_folder(schema: str, lease_id: str) -> str:
    """``_staging/_leases/{schema}/{lease_id}``."""
    return f"{lease_section(schema)}/{lease_id}"


def lease_path(schema: str, lease_id: str, name: str) -> str:
    """The file ``name`` of a lease: in its folder, or (``ONE_FILE``) the lease's one file."""
    if name == ONE_FILE:
        return f"{lease_section(schema)}/{lease_id}{ONE_FILE_SUFFIX}"
    return f"{lease_folder(schema, lease_id)}/{name}"


LeaseFiles = dict[tuple[str, str], dict[str, float | None]]  # (schema, lease id) -> file name -> modification time


def list_lease_files(store: StagedStore, schema: str | None = None) -> LeaseFiles:
    """One listing of the leases of ``schema`` in ``store`` (of every schema's, without one), each lease's files by
    name (its one file as ``ONE_FILE``) with their modification times."""
    root = lease_section(schema) if schema is not None else LEASES_ROOT
    found: LeaseFiles = {}
    for path, stored in store.list_files(root).items():
        parts = path[len(root) + 1 :].split("/")
        owner = schema if schema is not None else parts.pop(0)
        if len(parts) == 2:
            found.setdefault((owner, parts[0]), {})[parts[1]] = stored.mtime
        elif len(parts) == 1 and parts[0].endswith(ONE_FILE_SUFFIX):
            found.setdefault((owner, parts[0][: -len(ONE_FILE_SUFFIX)]), {})[ONE_FILE] = stored.mtime
    return found


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, default=str).encode()


def write_header(store: StagedStore, record: LeaseRecord, first: LeaseEntry) -> None:
    """Create the lease (its file, or its folder with its header), naming the first paths."""
    header = {
        "version": LEASE_VERSION,
        **{k: getattr(record, k) for k in _HEADER_KEYS},
        "entries": [_entry_dict(first)],
    }
    if record.one_file:
        store.create(record.root, _dumps(header) + b"\n")
    else:
        store.create(f"{record.root}/{HEADER}", _dumps(header))


def _entry_dict(entry: LeaseEntry) -> dict[str, Any]:
    found: dict[str, Any] = {"field": entry.field, "key": entry.key, "paths": entry.paths, "at": entry.at}
    if entry.marks is not None:
        found["marks"] = entry.marks
    if entry.taken_from is not None:
        found["taken_from"] = entry.taken_from
    return found


_HEADER_KEYS = ("lease_id", "schema", "lock", "table", "store", "host", "pid", "db_pid", "started", "resumable")
CHECKPOINT_PREFIX = "resume-"


def checkpoint_name(field: str, part: int | None = None) -> str:
    """The file of a field's checkpoint in its lease: ``resume-{field}.json``, or a directory's ``n``-th."""
    return f"{CHECKPOINT_PREFIX}{field}.json" if part is None else f"{CHECKPOINT_PREFIX}{field}.{part:06d}.json"


def write_checkpoint(store: StagedStore, schema: str, lease_id: str, name: str, doc: dict[str, Any]) -> None:
    """Write (or replace) the checkpoint file ``name`` of a lease: durable, and read whole or not at all."""
    store.replace_small(f"{lease_folder(schema, lease_id)}/{name}", _dumps(doc))


def _checkpoint(record: LeaseRecord, name: str, data: bytes) -> None:
    """Add the checkpoint file ``name`` to ``record`` (one being replaced or half-written is left out)."""
    try:
        doc = json.loads(data)
    except ValueError:
        logger.debug("Skipping an unreadable checkpoint %s/%s", record.lease_id, name)
        return
    stem = name[len(CHECKPOINT_PREFIX) : -len(".json")]
    field_name, dot, part = stem.rpartition(".")
    if dot and part.isdigit() and len(part) == 6:
        record.key_checkpoints.setdefault(field_name, []).append(doc)
    else:
        record.checkpoints[stem] = doc


class EntryWriter:
    """Adds entries to one lease in one store: appended lines where the store appends, one small object each
    elsewhere."""

    def __init__(self, store: StagedStore, record: LeaseRecord) -> None:
        self._store = store
        self._folder = record.root
        self._journal_path = record.root if record.one_file else f"{record.root}/{JOURNAL}"
        self._journal: IO[bytes] | None = None
        self._count = 0

    def add(self, entry: LeaseEntry) -> None:
        """Record ``entry``; it is visible to any reader of the store when this returns."""
        line = _dumps(_entry_dict(entry))
        if self._store.supports_append:
            if self._journal is None:
                self._journal = self._store.append(self._journal_path)
            self._journal.write(line + b"\n")
            self._journal.flush()
            return
        self._count += 1
        self._store.create(f"{self._folder}/{self._count:06d}.json", line)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def mark_abandoned(store: StagedStore, record: LeaseRecord) -> None:
    """Record that the block ended by ``KeyboardInterrupt``/``SystemExit``: its objects belong to no row."""
    if record.one_file:
        with store.append(record.root) as journal:
            mark = b"\n" + _dumps({"abandoned": time.time()}) + b"\n"  # a line of its own, however the file ends
            journal.write(mark)
    else:
        store.create(f"{record.root}/{ABANDONED}", _dumps({"at": time.time()}))


def remove_lease(store: StagedStore, record: LeaseRecord) -> None:
    """Delete a lease (its file, or its folder); absent is fine."""
    if record.one_file:
        store.delete_small(record.root)
    else:
        store.remove_folder(record.root)


def parse_lease(schema: str, lease_id: str, contents: dict[str, bytes | None]) -> LeaseRecord:
    """Build a record from a lease folder's files (name → bytes; None for a file that vanished)."""
    record = LeaseRecord(lease_id=lease_id, schema=schema, files=sorted(contents))
    if ONE_FILE in contents:
        record.one_file = True
        contents = _as_folder(contents)
    header = contents.get(HEADER)
    try:
        data = json.loads(header) if header is not None else None
        if not isinstance(data, dict) or data.get("version") != LEASE_VERSION:
            raise ValueError("not a dj-staged lease header")
        for key in _HEADER_KEYS:
            if key in data:
                setattr(record, key, data[key])
        record.entries = [LeaseEntry(**entry) for entry in data.get("entries", [])]
    except (ValueError, TypeError):
        record.readable = False
        record.lock = key_in_id(lease_id)  # a header being written: live while this lock is held
    for name in sorted(contents):
        data_bytes = contents[name]
        if name == ABANDONED:
            record.abandoned = True
        elif data_bytes is None or name == HEADER:
            continue
        elif name.startswith(CHECKPOINT_PREFIX) and name.endswith(".json"):
            _checkpoint(record, name, data_bytes)
        elif name == JOURNAL:
            for line in data_bytes.splitlines():
                record.entries.extend(_entry(lease_id, name, line))
        elif name.endswith(".json"):
            record.entries.extend(_entry(lease_id, name, data_bytes))
    return record


def _as_folder(contents: dict[str, bytes | None]) -> dict[str, bytes | None]:
    """A one-file lease's lines as the files of a folder: the header, the journal, the abandoned mark."""
    data = contents.pop(ONE_FILE)
    if data is None:
        return contents
    header, _newline, rest = data.partition(b"\n")
    lines = [line for line in rest.splitlines() if line]
    abandoned = [line for line in lines if line.startswith(_ABANDONED_LINE)]
    journal = b"\n".join(line for line in lines if not line.startswith(_ABANDONED_LINE))
    return {**contents, HEADER: header, JOURNAL: journal, **({ABANDONED: abandoned[0]} if abandoned else {})}


def _entry(lease_id: str, name: str, data: bytes) -> list[LeaseEntry]:
    """The entry ``data`` holds, or none if it is half-written (see the module docstring)."""
    try:
        return [LeaseEntry(**json.loads(data))]
    except (ValueError, TypeError):
        logger.debug("Skipping an unreadable lease entry in %s/%s", lease_id, name)
        return []


def scan_leases(store: StagedStore, schema: str) -> list[LeaseRecord]:
    """Every lease of ``schema`` in the store: one listing, then the lease files read together."""
    return read_leases(store, list_lease_files(store, schema))


def read_leases(store: StagedStore, folders: LeaseFiles, *, skip_ended: bool = False) -> list[LeaseRecord]:
    """The leases ``folders`` names (``(schema, lease id)`` → file name → mtime, from one listing), their files
    read together, in order.

    With ``skip_ended``, a lease none of whose files can be read any more is left
    out: it was removed since the listing, so its write has ended.
    """
    where = {
        lease_path(schema, lease_id, name): (schema, lease_id, name)
        for (schema, lease_id), names in folders.items()
        for name in names
    }
    contents: dict[tuple[str, str], dict[str, bytes | None]] = {key: {} for key in folders}
    for path, data in store.read_many(where).items():
        schema, lease_id, name = where[path]
        contents[(schema, lease_id)][name] = data
    records = []
    for (schema, lease_id), files in sorted(contents.items()):
        if skip_ended and all(data is None for data in files.values()):
            continue
        record = parse_lease(schema, lease_id, files)
        times = [t for t in folders[(schema, lease_id)].values() if t is not None]
        record.newest = max(times) if times else None
        records.append(record)
    return records
