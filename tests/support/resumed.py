"""Checks on a resumed row ``k = 1`` of a table ``(k -> v)``, shared by the resume tests (the test's side; the
children that are cut off live in tests/support/resuming.py)."""

from __future__ import annotations

from typing import Any

import datajoint as dj
from datajoint.hash_registry import compute_hash

import dj_staged
from dj_staged.leases.claims import RESUME_NS, claim_key
from dj_staged.leases.takeover import resume_key
from dj_staged.stores import resolve_store
from support import resuming
from support.stores import lease_files, store_files


def stored_value(table: Any, k: int) -> dict:
    """Row ``k``'s ``v`` exactly as the database holds it."""
    return table.connection.query(f"SELECT v FROM {table.full_table_name} WHERE k = %s", args=(k,)).fetchone()[0]


def incomplete_uploads(store: Any) -> list[str]:
    """The store's unfinished multipart uploads (none where the store cannot list them)."""
    staged = resolve_store(store.name, dj.config)
    return sorted(staged.incomplete_uploads("")) if staged.supports_listing_incomplete_uploads else []


def wait_for_the_killed_session(table: Any, field: str = "v") -> None:
    """Wait (on the lock itself, no clock) until a killed writer's database session has ended on the server: it
    holds the row's resume key until then, and a resume would rightly be refused."""
    key = claim_key(resume_key(table.database, table.table_name, {"k": resuming.KEY}, field))
    table.connection.query("SELECT pg_advisory_lock(%s, %s)", args=(RESUME_NS, key))
    table.connection.query("SELECT pg_advisory_unlock(%s, %s)", args=(RESUME_NS, key))


def check_identical(
    table: Any, codec: str, data: bytes, store: Any, ext: str = ".bin", options: dict | None = None, **block: Any
) -> None:
    """Row 1 (resumed) holds ``data`` and the value a plain staged insert of ``data`` gets (row 2; ``block`` goes to
    its ``staged_insert1``): every byte and metadata field (``<object@>``'s path token and timestamp aside; a
    hash-addressed value equal as a whole, its hash that of the stored bytes). The store holds only what the rows
    reference: no lease, no staging object, no incomplete upload."""
    resumed = stored_value(table, 1)
    with dj_staged.staged_insert1(table, **block) as staged:
        staged.rec["k"] = 2
        with staged.open("v", ext, **(options or {})) as f:
            f.write(data)
    plain = stored_value(table, 2)
    fetched = (table & {"k": 1}).fetch1("v")
    if codec == "object":
        assert fetched.read() == data
        assert {k: v for k, v in resumed.items() if k not in ("path", "timestamp")} == {
            k: v for k, v in plain.items() if k not in ("path", "timestamp")
        }
    else:
        assert fetched == data
        assert resumed == plain  # hash, path, schema, store, size: the resumed row was inserted first
        with resolve_store(store.name, dj.config).open_read(resumed["path"]) as stored:
            assert compute_hash(stored.read()) == resumed["hash"]
    references = {resumed["path"], plain["path"]}
    left = store_files(store, leases=True)
    assert all(any(f == p or f.startswith(p + "/") for p in references) for f in left), left
    assert lease_files(store) == []
    assert incomplete_uploads(store) == []
