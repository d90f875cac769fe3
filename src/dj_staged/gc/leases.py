"""Leases: store-side markers that say "a staged write is in flight here".

DataJoint's garbage collector deletes any schema-addressed object no row
references, which includes the canonical path of a staged insert that has not
reached its ``insert1`` yet. A lease is a small JSON object in the field's own
store, at ``_staging/_leases/{schema}/{lease_id}.json``, naming the paths being
written. Because it lives in the store, every process and machine that shares
the store sees it. The writer renews it from a daemon thread every ``ttl / 4``
seconds and removes it when the block ends; a writer that dies stops renewing,
so its lease expires ``ttl`` seconds after the last renewal and what it left
becomes collectable.

A lease is live while either clock says so: the ``expires`` time the writer
recorded, or the store's modification time of the lease plus ``ttl``. Clock
skew between machines therefore only ever keeps a lease alive longer.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .listing import StoredFile, list_files

logger = logging.getLogger(__name__)

STAGING_PREFIX = "_staging"
LEASE_SECTION = "_leases"
LEASE_VERSION = 1
DEFAULT_TTL = float(os.environ.get("DJ_STAGED_LEASE_TTL", "300"))


def lease_section(schema: str) -> str:
    """Where the leases of ``schema`` live in a store: ``_staging/_leases/{schema}``."""
    return f"{STAGING_PREFIX}/{LEASE_SECTION}/{schema}"


def covers(lease_paths: Iterable[str], path: str) -> bool:
    """True if ``path`` is a leased path, lies under one, or is a sidecar of one (``.manifest.json``, ``.framed``)."""
    for leased in lease_paths:
        leased = leased.rstrip("/")
        if path == leased or path.startswith((leased + "/", leased + ".")):
            return True
    return False


@dataclass
class Lease:
    """One in-flight staged field, as written to (and read back from) the store."""

    lease_id: str
    schema: str
    table: str
    field: str
    store: str
    paths: list[str]
    ttl: float
    heartbeat: float
    host: str = ""
    pid: int = 0
    started: float = 0.0

    @property
    def expires(self) -> float:
        return self.heartbeat + self.ttl

    @property
    def relative_path(self) -> str:
        return f"{lease_section(self.schema)}/{self.lease_id}.json"

    def to_json(self) -> bytes:
        record = {"version": LEASE_VERSION, **self.__dict__, "expires": self.expires}
        return json.dumps(record, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Lease:
        record = json.loads(data)
        if not isinstance(record, dict) or not isinstance(record.get("paths"), list):
            raise ValueError("not a dj-staged lease")
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in record.items() if k in names})

    def is_live(self, now: float, stored_mtime: float | None) -> bool:
        """Live if the writer's clock or the store's clock says it was renewed within ``ttl``."""
        return self.expires > now or (stored_mtime is not None and stored_mtime + self.ttl > now)


def write_lease(backend: Any, lease: Lease) -> None:
    """Write ``lease`` atomically: a readers sees the old or the new record, never half of one."""
    fs = backend.fs
    final = backend._full_path(lease.relative_path)
    temporary = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    fs.pipe_file(temporary, lease.to_json())
    try:
        fs.mv(temporary, final)
    except Exception:
        _remove_quietly(fs, temporary)
        raise


def remove_lease(backend: Any, lease: Lease) -> None:
    """Delete ``lease`` from the store; absent is fine."""
    fs = backend.fs
    full = backend._full_path(lease.relative_path)
    if fs.exists(full):
        fs.rm(full)


def _remove_quietly(fs: Any, full: str) -> None:
    try:
        fs.rm(full)
    except Exception:
        logger.debug("Could not remove %s", full, exc_info=True)


@dataclass
class LeaseScan:
    """What a store holds for one schema's leases."""

    live: list[Lease] = field(default_factory=list)
    expired: dict[str, StoredFile] = field(default_factory=dict)
    unreadable: dict[str, StoredFile] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)

    @property
    def live_paths(self) -> list[str]:
        return [path for lease in self.live for path in lease.paths]


def scan_leases(backend: Any, schema: str, now: float) -> LeaseScan:
    """Read every lease of ``schema`` in the store and sort them into live, expired and unreadable."""
    scan = LeaseScan(files=list_files(backend, lease_section(schema)))
    for path, stored in scan.files.items():
        if not path.endswith(".json"):
            scan.unreadable[path] = stored  # a temporary left by a writer killed mid-renewal
            continue
        try:
            lease = Lease.from_json(backend.fs.cat_file(backend._full_path(path)))
        except FileNotFoundError:
            continue  # released while we were listing
        except (ValueError, TypeError):
            scan.unreadable[path] = stored
            continue
        if lease.is_live(now, stored.mtime):
            scan.live.append(lease)
        else:
            scan.expired[path] = stored
    return scan


class LeaseKeeper:
    """The writer's side: one lease per staged field of a session, renewed until released."""

    def __init__(self, ttl: float | None = None, renew_every: float | None = None) -> None:
        self.ttl = DEFAULT_TTL if ttl is None else ttl
        self.renew_every = self.ttl / 4 if renew_every is None else renew_every
        self._leases: dict[tuple[int, str], tuple[Any, Lease]] = {}  # (id(session), field) -> lease
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0

    @property
    def leases(self) -> list[Lease]:
        with self._lock:
            return [lease for _backend, lease in self._leases.values()]

    def cover(self, session: Any, field: str, path: str | None = None) -> None:
        """Make sure the field's lease names ``path`` (default: the path its lifecycle is writing).

        The first call for a field writes its lease; later calls rewrite it
        only when they add a path. Raises if the store refuses the lease: a
        write that no lease protects must not start.
        """
        slot = session.slot(field)
        path = path or slot.state.get("path") or slot.state.get("staging_path")
        if path is None:
            return
        with self._lock:
            key = (id(session), field)
            backend, lease = self._leases.get(key, (slot.backend, None))
            if lease is not None and path in lease.paths:
                return
            if lease is None:
                now = time.time()
                lease = Lease(
                    lease_id=uuid.uuid4().hex,
                    schema=session.table.database,
                    table=session.table.table_name,
                    field=field,
                    store=slot.store_name,
                    paths=[],
                    ttl=self.ttl,
                    heartbeat=now,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started=now,
                )
            lease.paths.append(path)
            lease.heartbeat = time.time()
            write_lease(backend, lease)
            self._leases[key] = (backend, lease)
        self._start()

    def renew(self) -> None:
        """Rewrite every lease with a fresh heartbeat; a failure is logged and retried next time."""
        with self._lock:
            for backend, lease in self._leases.values():
                lease.heartbeat = time.time()
                try:
                    write_lease(backend, lease)
                except Exception:
                    logger.warning("Renewing the lease of staged field '%s' failed", lease.field, exc_info=True)
            self.renewals += 1

    def release_session(self, session: Any) -> None:
        """Remove the leases of one session (a batch row that unwound on its own); failures are logged."""
        with self._lock:
            keys = [key for key in self._leases if key[0] == id(session)]
            for key in keys:
                backend, lease = self._leases.pop(key)
                try:
                    remove_lease(backend, lease)
                except Exception:
                    logger.warning("Removing the lease of staged field '%s' failed", lease.field, exc_info=True)

    def release(self) -> None:
        """Stop renewing and remove every lease; failures are logged (the lease then expires by itself)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.renew_every + 5)
        with self._lock:
            for backend, lease in self._leases.values():
                try:
                    remove_lease(backend, lease)
                except Exception:
                    logger.warning(
                        "Removing the lease of staged field '%s' failed; it expires after %.0f s",
                        lease.field,
                        lease.ttl,
                        exc_info=True,
                    )
            self._leases.clear()

    def _start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="dj-staged-lease", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.renew_every):
            self.renew()
