"""Commits whose reply is lost: nothing is deleted until the rows have been looked up.

The writer's database connection goes through a proxy on 127.0.0.1 that drops
the server's reply to a chosen statement after the server executed it (a real
network fault, on the real path). Every committed row is then fetched and its
bytes compared.
"""

from __future__ import annotations

import datajoint as dj
import numpy as np
import psycopg2
import pytest
import zarr
from support.database import wait_for_session_end
from support.pgproxy import connect_datajoint_through
from support.stores import store_files

import dj_staged
import dj_staged.gc
from dj_staged import steps
from dj_staged.errors import AmbiguousCommitError, CommitRecoveredWarning
from dj_staged.leases import held_lease_keys, scan_leases
from dj_staged.leases.locks import COMMIT_GUARD_TAG
from dj_staged.stores import resolve_store

COMMIT = COMMIT_GUARD_TAG  # a staged commit is one statement: the lease's guard, then the INSERT

DEFINITION = """
recording_id : int32
---
waveform : <npy@{store}>
raw : <object@{store}>
frames : <zarr@{store}>
"""

FRAMES = np.arange(6 * 8, dtype="uint16").reshape(6, 8)


@pytest.fixture
def proxied(proxy, djstaged_schema, store):
    """The test's schema through a connection that goes through the proxy, with a table of three codecs."""
    connection = connect_datajoint_through(proxy)
    schema = dj.Schema(djstaged_schema.database, connection=connection, create_schema=False)
    table = schema(type("Recording", (dj.Manual,), {"definition": DEFINITION.format(store=store.name)}))
    yield table
    connection.close()


def write(staged, key: int) -> None:
    staged.rec["recording_id"] = key
    with staged.open("waveform", ".npy") as f:
        np.save(f, np.full(5, key, dtype="float64"))
    with staged.open("raw", ".bin") as f:
        f.write(f"raw bytes of {key}".encode())
    z = zarr.open(staged.store("frames", ".zarr"), mode="w", shape=FRAMES.shape, chunks=(2, 8), dtype="uint16")
    z[:] = FRAMES + key


def check_row(table, key: int) -> None:
    """The committed row fetches exactly what was written."""
    row = (table & {"recording_id": key}).fetch1()
    np.testing.assert_array_equal(row["waveform"].load(), np.full(5, key, dtype="float64"))
    assert row["raw"].read() == f"raw bytes of {key}".encode()
    np.testing.assert_array_equal(row["frames"][:], FRAMES + key)


def test_a_committed_row_whose_commit_reply_was_lost_keeps_its_objects(proxied, proxy, store, djstaged_schema):
    proxy.drop_reply_after(COMMIT)
    with pytest.warns(CommitRecoveredWarning):
        with dj_staged.staged_insert1(proxied) as staged:
            write(staged, 1)
    (dropped,) = proxy.dropped
    assert (dropped.tags, dropped.status) == (("DO", "INSERT 0 1"), "I")  # the server committed; the client never heard
    check_row(proxied, 1)
    assert not [f for f in store_files(store, leases=True) if f.startswith("_staging/")]
    assert dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False).deleted == 0


def test_a_batch_whose_commit_reply_was_lost_keeps_every_row(proxied, proxy, store, djstaged_schema):
    proxy.drop_reply_after(COMMIT)
    with pytest.warns(CommitRecoveredWarning), dj_staged.staged_insert(proxied) as batch:
        for key in range(1, 6):
            with batch.row() as staged:
                write(staged, key)
    assert [(d.tags, d.status) for d in proxy.dropped] == [(("DO", "INSERT 0 5"), "I")]
    for key in range(1, 6):
        check_row(proxied, key)
    assert dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False).deleted == 0


def test_a_batch_of_several_statements_whose_commit_reply_was_lost_keeps_every_row(
    proxied, proxy, store, djstaged_schema
):
    """More rows than one statement takes: BEGIN, the guard, the chunks, COMMIT; the COMMIT's reply is lost."""
    proxy.drop_reply_after(r"^\s*COMMIT")
    with pytest.warns(CommitRecoveredWarning), dj_staged.staged_insert(proxied, chunk_size=2) as batch:
        for key in range(1, 6):
            with batch.row() as staged:
                write(staged, key)
    assert [(d.tags, d.status) for d in proxy.dropped] == [(("COMMIT",), "I")]
    for key in range(1, 6):
        check_row(proxied, key)
    assert dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False).deleted == 0


def test_a_commit_that_failed_on_the_server_and_lost_its_reply_is_unwound(proxied, proxy, store, djstaged_schema):
    """Another writer takes the key while this one commits, so the server refuses this commit, and the
    refusal's reply is lost. The lookup finds the key holding the other writer's values, not these:
    nothing of this writer committed, so it unwinds with DataJoint's DuplicateError, and the other row keeps
    its objects."""
    other = djstaged_schema(type("Recording", (dj.Manual,), {"definition": DEFINITION.format(store=store.name)}))
    taken: list[str] = []

    def take_the_key(**context: object) -> None:
        if not taken:
            taken.append("other")
            with dj_staged.staged_insert1(other) as staged:  # not through the proxy
                write(staged, 1)

    proxy.drop_reply_after(COMMIT)
    with steps.observe("writer.commit", take_the_key):
        with pytest.raises(dj.errors.DuplicateError, match="another row with the same primary key"):
            with dj_staged.staged_insert1(proxied) as staged:
                write(staged, 1)
    (dropped,) = proxy.dropped
    assert (dropped.sqlstate, dropped.status) == ("23505", "I")  # refused as a duplicate, nothing left open
    check_row(other, 1)
    assert len(other()) == 1
    assert len([f for f in store_files(store) if not f.startswith("_staging/")]) == 2 + 4  # the other row's only
    assert dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=True).count == 0


def test_when_the_lookup_fails_too_everything_is_kept_for_the_collector(proxied, proxy, store, djstaged_schema):
    proxy.drop_reply_after(COMMIT)
    with steps.observe("writer.resolve", lambda **context: proxy.close()):  # the database is now unreachable
        with pytest.raises(AmbiguousCommitError) as raised, dj_staged.staged_insert1(proxied) as staged:
            write(staged, 1)
    assert raised.value.keys == [{"recording_id": 1}]
    left = [f for f in store_files(store) if not f.startswith("_staging/")]
    assert len(left) == 2 + 4  # waveform, raw, and the Zarr array's zarr.json and three chunks: all kept
    table = dj.FreeTable(djstaged_schema.connection, proxied.full_table_name)
    (lease,) = scan_leases(resolve_store(store.name, dj.config), djstaged_schema.database)
    wait_for_session_end(djstaged_schema.connection, lease.db_pid)  # the server notices the cut connection
    assert lease.lock not in held_lease_keys(
        djstaged_schema.connection
    )  # the lease died with it; its record names them
    report = dj_staged.gc.collect(djstaged_schema, store=store.name, dry_run=False)  # default grace
    assert sum(s.deleted for s in report.sections if s.section != "leases") == 0  # the row references them
    assert report.section("leases").deleted == len(report.section("leases").paths) > 0
    check_row(table, 1)


def test_a_user_transaction_whose_commit_reply_was_lost(proxied, proxy, store, djstaged_schema):
    connection = proxied.connection
    proxy.drop_reply_after(r"^\s*COMMIT")
    with pytest.warns(CommitRecoveredWarning), pytest.raises(psycopg2.OperationalError):
        with connection.transaction:
            with dj_staged.staged_insert1(proxied) as staged:
                write(staged, 1)
    check_row(proxied, 1)
    assert "commit_transaction" not in vars(connection)
    assert dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False).deleted == 0


def test_a_connection_lost_between_two_blocks_is_reconnected_for_the_next(proxied, proxy, store, djstaged_schema):
    """The network cuts the writer's connection after one block: the next block, holding nothing yet, takes its
    lease on a new session (and the one after it too), instead of failing on the dead connection."""
    with dj_staged.staged_insert1(proxied) as staged:
        write(staged, 1)
    assert proxy.kill_connections() == 1
    for key in (2, 3):
        with dj_staged.staged_insert1(proxied) as staged:
            write(staged, key)
    for key in (1, 2, 3):
        check_row(proxied, key)
