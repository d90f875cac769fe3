"""Another writer's lease, written into a store as that writer would, its lock held or not."""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import datajoint as dj


def foreign_lease(postgres: Any, store: Any) -> Callable[..., contextlib.AbstractContextManager[str]]:
    """Write a lease of another writer into ``store``; ``live=True`` holds its lock on a separate session.

    Usage: ``with foreign_lease(postgres, store)(schema_name, paths, live=True) as root: ...``, where ``root`` is
    the lease's folder, or its one file with ``one_file=True``.
    """
    from dj_staged.leases.locks import LEASE_NS
    from dj_staged.leases.records import LeaseEntry, LeaseRecord, write_header
    from dj_staged.stores import resolve_store

    @contextlib.contextmanager
    def lease(schema_name: str, paths: list[str], *, live: bool, one_file: bool = False) -> Iterator[str]:
        session = dj.Connection(postgres.host, postgres.user, postgres.password, postgres.port)
        key = secrets.randbelow(1 << 31)
        if live:
            session.query("SELECT pg_advisory_lock(%s, %s)", args=(LEASE_NS, key))
        lease_id = uuid.uuid4().hex
        record = LeaseRecord(
            lease_id=lease_id, schema=schema_name, lock=key, table="recording", store=store.name, one_file=one_file
        )
        entry = LeaseEntry(field="blob", key={"recording_id": 99}, paths=paths, at=time.time())
        write_header(resolve_store(store.name, dj.config), record, entry)
        try:
            yield record.root
        finally:
            session.close()

    return lease
