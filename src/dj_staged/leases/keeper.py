"""The writer's side of a lease: take it before the first byte, fence before the commit, release after.

One :class:`LeaseKeeper` serves one writer (a ``staged_insert1`` block, or a
whole ``staged_insert`` batch): one lease lock on the database session that
will insert the rows, and one lease folder in each store the writer uses.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import steps
from .._datajoint import Connection, DatabaseFailure, backend_pid, database_failure
from ..errors import LeaseLostError, PathTakenError, ResumeKeyTakenError
from ..stores.base import StagedStore
from .claims import RESUME_NS, Claim, release_claim, try_claim
from .locks import (
    LeaseLock,
    acquire_lease_lock,
    commit_guard,
    held_lease_keys,
    lease_held,
    new_lease_key,
    release_lease_lock,
    release_shared_gate,
    shared_gate,
)
from .records import (
    EntryWriter,
    LeaseEntry,
    LeaseRecord,
    checkpoint_name,
    lease_id_for,
    mark_abandoned,
    remove_lease,
    write_checkpoint,
    write_header,
)
from .takeover import ResumePoint, resumable_leases, resume_key, resume_points

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Leases the paths of one writer in its stores, backed by one advisory lock on its database session."""

    def __init__(self, connection: Connection, schema: str, table: str, *, resumable: bool = False) -> None:
        self.connection = connection
        self.schema = schema
        self.table = table
        self.resumable = resumable  # a write that may be resumed: its lease outlives an interruption
        self._key = new_lease_key()
        self.lease_id = lease_id_for(self._key)
        self.lock: LeaseLock | None = None
        # store name -> (store, where entries go, the lease's header there)
        self._stores: dict[str, tuple[StagedStore, EntryWriter, LeaseRecord]] = {}
        self._paths: set[tuple[str, str]] = set()
        self._mutex = threading.Lock()
        self._lock_handed_over = False  # the commit's transaction took the lock: it ends with that transaction
        self._claims: dict[tuple[str, str], Claim] = {}  # (store, path) -> the claim on a path the writer chose
        self._taken: dict[str, dict[str, ResumePoint]] = {}  # store -> field -> what earlier attempts left there
        self._checkpoint_parts: dict[tuple[str, str], int] = {}  # (store, field) -> next store() checkpoint's number
        self.ended = False

    @property
    def paths(self) -> list[tuple[str, str]]:
        """``(store, path)`` of every path leased so far."""
        return sorted(self._paths)

    def covers(self, store: str, path: str) -> bool:
        """Whether ``path`` in ``store`` is leased by this writer."""
        return (store, path) in self._paths

    def take(self, probe: tuple[str, Sequence[Any]] | None = None) -> object:
        """Take the lease lock now, if not yet taken, and evaluate ``probe`` (a scalar SQL expression and its
        arguments) in the same round trip; the probe's value (None without one).

        A writer takes it before it writes anything, with the check that its
        key is not in the table yet as the probe: one round trip for both.
        """
        with self._mutex:
            if self.lock is None:
                _lock, answer = self._acquire(probe=probe)
                return answer
        if probe is None:
            return None
        return self.connection.query(f"SELECT ({probe[0]})", args=tuple(probe[1])).fetchone()[0]

    def _acquire(
        self, *, gate: bool = False, probe: tuple[str, Sequence[Any]] | None = None
    ) -> tuple[LeaseLock, object]:
        try:
            self.lock, answer = acquire_lease_lock(
                self.connection, self._key, gate=self.schema if gate else None, probe=probe
            )
        except Exception as error:
            # nothing is held yet: a connection lost since the last block is reconnected and the lease taken on the
            # new session; inside a transaction the caller's transaction is gone, which it must be told
            if database_failure(error) is not DatabaseFailure.CONNECTION_LOST or self.connection.in_transaction:
                raise
            logger.info("The database connection was lost since it was last used; reconnecting to take the lease")
            self.connection.connect()
            self.lock, answer = acquire_lease_lock(
                self.connection, self._key, gate=self.schema if gate else None, probe=probe
            )
        if self.lock.key != self._key:  # another session held that key: the id follows the key taken
            self._key, self.lease_id = self.lock.key, lease_id_for(self.lock.key)
        return self.lock, answer

    def lease(
        self,
        store: StagedStore,
        paths: Sequence[str],
        *,
        field: str,
        key: dict[str, Any],
        fresh: bool = False,
        marks: dict[str, str] | None = None,
        taken_from: str | None = None,
    ) -> None:
        """Lease ``paths`` in ``store`` before they are written or referenced.

        Takes the lease lock first if not taken yet, then writes the lease
        record (or adds an entry to it). ``fresh=True`` says the paths are new
        ones this writer is about to create (a random token): no collector can
        have listed what does not exist yet, so the entry needs no gate. Other
        paths are recorded holding the schema's gate shared, so no collector
        is between reading the leases and deleting at that moment. Raises if
        the store or the database refuses: a write no lease protects must not
        start. ``marks`` gives, for a path the writer chose, the mark of what it
        will place there.
        """
        name = store.name
        with self._mutex:
            new = [p for p in dict.fromkeys(paths) if (name, p) not in self._paths]
            if not new:
                return
            entry = LeaseEntry(
                field=field, key=dict(key), paths=new, at=time.time(), marks=marks, taken_from=taken_from
            )
            if self.lock is None:  # the lock, and the gate when needed, in one round trip
                self._acquire(gate=not fresh)
                try:
                    self._record(store, entry)
                finally:
                    if not fresh:
                        release_shared_gate(self.connection, self.schema)
            elif fresh:
                self._record(store, entry)
            else:
                with shared_gate(self.connection, self.schema):
                    self._record(store, entry)
            self._paths.update((name, p) for p in new)
        steps.reach("writer.lease", lease=self.lease_id, store=name, paths=new, field=field)

    def _record(self, store: StagedStore, entry: LeaseEntry) -> None:
        """Name ``entry``'s paths in the lease's record in ``store``: its header first, then added entries."""
        if store.name in self._stores:
            self._stores[store.name][1].add(entry)
        else:
            self._start(store, entry)

    def _start(self, store: StagedStore, entry: LeaseEntry) -> None:
        """Create the lease's record in ``store``, naming the first paths there."""
        record = self._header(store)
        try:
            write_header(store, record, entry)
        except BaseException:
            _quietly(remove_lease, store, record)
            raise
        self._stores[store.name] = (store, EntryWriter(store, record), record)

    def _header(self, store: StagedStore) -> LeaseRecord:
        assert self.lock is not None
        return LeaseRecord(
            lease_id=self.lease_id,
            schema=self.schema,
            lock=self.lock.key,
            table=self.table,
            store=store.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            db_pid=self.lock.pid,
            started=time.time(),
            resumable=self.resumable,
            one_file=store.supports_append and not self.resumable,  # checkpoints are replaced whole: a folder
        )

    def claim(self, store: StagedStore, path: str, *, field: str) -> None:
        """Claim ``path`` in ``store`` for this writer alone (see :mod:`~dj_staged.leases.claims`); raise
        :class:`PathTakenError` if another writer, or another row of this one, has it."""
        with self._mutex:
            if (store.name, path) in self._claims:
                raise PathTakenError(
                    f"Field '{field}': another row of this staged insert already writes {path!r} in store "
                    f"'{store.name}'; each row needs a path of its own",
                    field=field,
                )
            claim, holder = try_claim(self.connection, store.name, path, store.claim_location(path))
            if claim is None:
                who = f"database session {holder}" if holder is not None else "a session that has just ended"
                raise PathTakenError(
                    f"Field '{field}': another staged insert ({who}) is writing {path!r} in store '{store.name}'; "
                    "wait for it to end, or choose another path",
                    field=field,
                )
            self._claims[(store.name, path)] = claim

    def claim_resume(self, store: StagedStore, key: dict[str, Any], field: str) -> None:
        """Hold the resume key (schema, table, ``key``, ``field``) for this writer alone until its block ends;
        :class:`~dj_staged.errors.ResumeKeyTakenError` naming the writer that holds it otherwise."""
        where = resume_key(self.schema, self.table, key, field)
        with self._mutex:
            if ("", where) in self._claims:
                return
            claim, holder = try_claim(self.connection, "", where, where, namespace=RESUME_NS)
            if claim is None:
                raise ResumeKeyTakenError(
                    f"Field '{field}' of {self.schema}.{self.table} {key} is being resumed by another writer "
                    f"({self._describe(store, holder)}); only one writer resumes a field at a time, so wait for "
                    "that one to end, or stop it",
                    field=field,
                )
            self._claims[("", where)] = claim

    def _describe(self, store: StagedStore, holder: int | None) -> str:
        """Who holds a claim: its database session, and the host and process its lease names."""
        if holder is None:
            return "a database session that has just ended"
        from .records import scan_leases

        for record in scan_leases(store, self.schema):
            if record.db_pid == holder and record.lease_id != self.lease_id:
                return f"host {record.host}, process {record.pid}, database session {holder}, lease {record.lease_id}"
        return f"database session {holder}"

    def take_over(self, store: StagedStore, key: dict[str, Any]) -> dict[str, ResumePoint]:
        """What earlier attempts of the row ``key`` left in ``store``, per field, now leased by this writer (see
        :mod:`~dj_staged.leases.takeover`); once per store. The lease lock is held already."""
        if store.name in self._taken:
            return self._taken[store.name]
        records = resumable_leases(store, self.schema, self.table, key, held_lease_keys(self.connection))
        points = resume_points(records)
        for name in points:
            self.claim_resume(store, key, name)
        for name, point in points.items():
            if point.paths:
                self.lease(store, point.paths, field=name, key=key, taken_from=",".join(point.taken_from))
        for name, point in points.items():
            if point.checkpoint is not None:
                self.checkpoint(store, name, point.checkpoint)
            for doc in point.key_checkpoints:
                self.checkpoint(store, name, doc, part=True)
        if records:
            steps.reach("writer.takeover", lease=self.lease_id, store=store.name, taken=[r.lease_id for r in records])
        for record in records:
            remove_lease(store, record)
        self._taken[store.name] = points
        return points

    def checkpoint(self, store: StagedStore, field: str, doc: dict[str, Any], *, part: bool = False) -> None:
        """Record a resumable write's checkpoint of ``field`` in its lease in ``store``: replacing the last one,
        or (``part``: a store() directory's) beside the earlier ones. Nothing once the lease has ended."""
        with self._mutex:
            if self.ended:
                return
            number = None
            if part:
                number = self._checkpoint_parts.get((store.name, field), 0)
                self._checkpoint_parts[(store.name, field)] = number + 1
            write_checkpoint(store, self.schema, self.lease_id, checkpoint_name(field, number), doc)
        steps.reach("writer.checkpoint", lease=self.lease_id, store=store.name, field=field, doc=doc)

    def suspend(self) -> None:
        """A resumable write was interrupted: keep its records (a later writer resumes from them, a collector keeps
        them for the resume window), release its locks and claims."""
        self._end(None, "Keeping")

    def fence(self) -> None:
        """Raise :class:`LeaseLostError` unless the lease lock was held without a break until now."""
        if self.lock is None:
            return
        if not lease_held(self.connection, self.lock):
            raise self.lost()

    def commit_guard(self) -> str:
        """SQL that fences the lease inside the commit's transaction and hands it the lease lock (see
        :func:`~dj_staged.leases.locks.commit_guard`); empty if nothing was leased.

        Building it changes nothing: until the server has run it (:meth:`handed_over`),
        :meth:`release` and :meth:`abandon` release the lock themselves.
        """
        if self.lock is None:
            return ""
        return commit_guard(self.lock)

    def handed_over(self) -> None:
        """The server ran the commit guard: the lock is the transaction's now, which releases it when it ends."""
        self._lock_handed_over = True

    def lost(self) -> LeaseLostError:
        """The error for a lease that lapsed before its commit."""
        return LeaseLostError(
            f"The lease of this staged insert into {self.schema}.{self.table} lapsed before its commit (the "
            "database session that held it ended), so a collector may have removed its objects; nothing was "
            "inserted. Run the staged insert again."
        )

    def release(self) -> None:
        """The rows are visible (or nothing was written): remove the lease records, then the lock."""
        if self._end(remove_lease, "Removing"):
            steps.reach("writer.release", lease=self.lease_id)

    def abandon(self) -> None:
        """The block was interrupted: mark the lease abandoned and let it die, keeping what it names.

        The collector reclaims what an abandoned (or dead) lease names at once,
        without waiting for the grace period, unless a row references it.
        """
        self._end(mark_abandoned, "Marking abandoned")

    def _end(self, action: Callable[[StagedStore, LeaseRecord], None] | None, verb: str) -> bool:
        """Apply ``action`` to the lease's record in every store, then release the lock; False if already ended."""
        with self._mutex:
            if self.ended:
                return False
            self.ended = True
            for name, (store, entries, record) in self._stores.items():
                try:
                    entries.close()
                    if action is not None:
                        action(store, record)
                except Exception:
                    logger.warning("%s lease %s in store %s failed", verb, self.lease_id, name, exc_info=True)
            self._unlock()
            self._release_claims()
        return True

    def _release_claims(self) -> None:
        """Release the claims on the paths this writer chose, on the session that holds them (a session that
        ended released them)."""
        claims, self._claims = list(self._claims.values()), {}  # paths chosen, and resume keys
        for claim in claims:
            if backend_pid(self.connection) != claim.pid:
                continue
            try:
                release_claim(self.connection, claim)
            except Exception:
                logger.warning("Releasing the claim on %s failed; it ends with the database session", claim.path)

    def _unlock(self) -> None:
        """Release the lease lock, unless a transaction took it or the session that held it is gone (the
        server released it then: a new session of the same connection holds nothing to release)."""
        if self.lock is None or self._lock_handed_over or backend_pid(self.connection) != self.lock.pid:
            return
        try:
            release_lease_lock(self.connection, self.lock)
        except Exception:
            logger.warning("Releasing the lease lock failed; it ends with the database session", exc_info=True)


def _quietly(action: Callable[..., object], *args: object) -> None:
    """Run a best-effort cleanup after a failure; its own failure is logged, never raised over the first."""
    try:
        action(*args)
    except Exception:
        logger.debug("Cleanup %s%s failed", getattr(action, "__name__", action), args, exc_info=True)
