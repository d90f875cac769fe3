"""The writer–collector protocol, proven by interleaving: one party paused at a named step, the other run.

Each test pauses a writer or a collector at a step of ``dj_staged.steps`` (a
barrier in the paused thread, never a sleep), runs the other party to the end,
resumes, and then fetches every committed row and compares its bytes. The
collector always reaches the schema through a second database session, as a
collector in another process would.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import datajoint as dj
import numpy as np
import psycopg2
import pytest
import zarr
from support.database import advisory_locks, wait_for_lock_waiter, wait_for_session_end
from support.races import Party, Pause
from support.stores import store_files
from support.tables import declare

import dj_staged
import dj_staged.gc
from dj_staged import steps
from dj_staged.errors import GateLostError, IncompleteObjectError, LeaseLostError
from dj_staged.gc.policy import LEASED
from dj_staged.leases.locks import GATE_NS

LATER = 2 * 86400.0  # an injected collector clock two days ahead: every unleased object is past the grace period


@pytest.fixture
def Content(djstaged_schema, store):
    return declare(djstaged_schema, "Content", f"k : int32\n---\nv : <hash@{store.name}>")


@pytest.fixture
def Recording(djstaged_schema, store):
    definition = f"recording_id : int32\n---\nwaveform = null : <npy@{store.name}>\nraw = null : <object@{store.name}>"
    return declare(djstaged_schema, "Recording", definition)


def stage_content(table, key: int, data: bytes) -> None:
    with dj_staged.staged_insert1(table) as staged:
        staged.rec["k"] = key
        with staged.open("v", ".bin") as f:
            f.write(data)


def old_orphan(table, data: bytes) -> str:
    """A canonical object no row references any more (its row was deleted): what a collector may take."""
    table.insert1({"k": 1, "v": data})
    (value,) = table.connection.query(f"SELECT v FROM {table.full_table_name}").fetchone()
    (table & {"k": 1}).delete()
    return value["path"]


def collect(schema, store, **options):
    return dj_staged.gc.collect(schema, store=store.name, dry_run=False, **options)


def test_dedup_onto_an_object_a_collector_listed_before_the_write(Content, store, elsewhere):
    """The collector listed the orphan and judged it old; the writer deduplicated onto it and committed meanwhile."""
    data = os.urandom(50_000)
    target = old_orphan(Content, data)
    pause = Pause("collector")
    with steps.observe("collector.list", pause):
        collector = Party("collector", collect, elsewhere, store, now=time.time() + LATER)
        collector.start()
        pause.wait()
        stage_content(Content, 2, data)  # leases the orphan, finds it, commits, releases
        pause.go()
        report = collector.outcome()
    assert target not in report.paths and target in store_files(store)
    assert (Content & {"k": 2}).fetch1("v") == data


def test_dedup_waits_for_a_collector_in_its_window_then_stores_its_own_copy(Content, store, elsewhere):
    """The collector holds the gate and is about to delete the orphan: the writer's lease waits, then it promotes."""
    data = os.urandom(50_000)
    target = old_orphan(Content, data)
    pause = Pause("collector")
    with steps.observe("collector.read_references", pause):
        collector = Party("collector", collect, elsewhere, store, now=time.time() + LATER)
        collector.start()
        pause.wait()  # inside the window, the gate held
        writer = Party("writer", stage_content, Content, 2, data)
        writer.start()
        wait_for_lock_waiter(elsewhere.connection)  # the writer waits for the gate to lease the target
        pause.go()
        report = collector.outcome()
        writer.outcome()
    assert target in report.paths  # the collector deleted the orphan ...
    assert (Content & {"k": 2}).fetch1("v") == data  # ... and the writer stored its own copy at the same path
    assert target in store_files(store)


def test_a_writer_paused_after_dedup_keeps_its_target(Content, store, elsewhere):
    data = os.urandom(50_000)
    target = old_orphan(Content, data)
    pause = Pause("writer")
    with steps.observe("writer.dedup", pause):
        writer = Party("writer", stage_content, Content, 2, data)
        writer.start()
        pause.wait()
        report = collect(elsewhere, store, now=time.time() + LATER)  # default grace, the orphan two days old
        assert report.section("hash").protected == {target: LEASED} and report.deleted == 0
        pause.go()
        writer.outcome()
    assert (Content & {"k": 2}).fetch1("v") == data


@pytest.mark.parametrize("codec", ["object", "hash"])
def test_objects_complete_but_not_yet_committed_are_protected_whatever_their_age(
    djstaged_schema, store, elsewhere, codec
):
    """Grace 0 and a clock far ahead: only the lease protects a write that has finished and not yet committed.

    On S3 a fresh object's LastModified has one-second resolution; on a local
    store a hard-linked promotion keeps the staging file's older mtime. Neither
    matters: the collector's age test is not what protects a staged write.
    """
    Table = declare(djstaged_schema, "Late", f"k : int32\n---\nv : <{codec}@{store.name}>")
    data = os.urandom(30_000)

    def write() -> None:
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["k"] = 1
            with staged.open("v", ".bin") as f:
                f.write(data)

    pause = Pause("writer")
    with steps.observe("writer.commit", pause):
        writer = Party("writer", write)
        writer.start()
        pause.wait()
        report = collect(elsewhere, store, grace=0, now=time.time() + LATER)
        assert report.deleted == 0 and report.count == 0
        assert LEASED in {reason for section in report.sections for reason in section.protected.values()}
        pause.go()
        writer.outcome()
    fetched = (Table & {"k": 1}).fetch1("v")
    assert (fetched.read() if codec == "object" else fetched) == data
    assert collect(elsewhere, store, grace=0, now=time.time() + LATER).deleted == 0  # now it is referenced


def test_a_whole_staged_insert_during_a_collection_is_never_taken(Recording, store, elsewhere):
    pause = Pause("collector")
    with steps.observe("collector.list", pause):
        collector = Party("collector", collect, elsewhere, store, grace=0, now=time.time() + LATER)
        collector.start()
        pause.wait()
        with dj_staged.staged_insert1(Recording) as staged:
            staged.rec["recording_id"] = 1
            with staged.open("raw", ".bin") as f:
                f.write(b"committed during the collection")
        pause.go()
        assert collector.outcome().deleted == 0
    assert (Recording & {"recording_id": 1}).fetch1("raw").read() == b"committed during the collection"


def test_a_lease_lasts_until_the_enclosing_transaction_commits(Recording, store, elsewhere):
    connection = Recording.connection
    with connection.transaction:
        with dj_staged.staged_insert1(Recording) as staged:
            staged.rec["recording_id"] = 1
            with staged.open("raw", ".bin") as f:
                f.write(b"inside a transaction")
        # the block has ended; the row is not visible to other sessions yet
        assert len(dj.FreeTable(elsewhere.connection, Recording.full_table_name)) == 0
        report = collect(elsewhere, store, grace=0, now=time.time() + LATER)
        assert report.deleted == 0 and LEASED in report.section("schema").protected.values()
    assert (Recording & {"recording_id": 1}).fetch1("raw").read() == b"inside a transaction"
    assert collect(elsewhere, store, grace=0, now=time.time() + LATER).deleted == 0


def test_a_directory_removed_mid_write_fails_the_commit(djstaged_schema, djstaged_local_store):
    Table = declare(djstaged_schema, "Frames", "k : int32\n---\nframes : <object@main>")
    frames = np.arange(8 * 16, dtype="uint16").reshape(8, 16)
    with pytest.raises(IncompleteObjectError) as raised, dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        z = zarr.open(staged.store("frames", ".zarr"), mode="w", shape=frames.shape, chunks=(1, 16), dtype="uint16")
        for i in range(4):
            z[i] = frames[i]
        shutil.rmtree(Path(djstaged_local_store.spec["location"]) / staged.field("frames").state.path)  # someone else
        for i in range(4, 8):
            z[i] = frames[i]
    assert raised.value.field == "frames" and "gone or changed" in str(raised.value)
    assert len(Table()) == 0 and store_files(djstaged_local_store) == []


def test_zarr_overwrite_mode_through_the_handle_is_not_a_removal(djstaged_schema, djstaged_local_store):
    """``zarr.open(..., mode="w")`` empties the directory through the handle: that is the writer's own doing."""
    Table = declare(djstaged_schema, "Frames", "k : int32\n---\nframes : <object@main>")
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        fsmap = staged.store("frames", ".zarr")
        zarr.open(fsmap, mode="w", shape=(4,), chunks=(2,), dtype="int8")[:] = 1
        zarr.open(fsmap, mode="w", shape=(6,), chunks=(3,), dtype="int8")[:] = 2  # rewrites from scratch
    z = zarr.open(Table.fetch1("frames").fsmap, mode="r")
    np.testing.assert_array_equal(z[:], np.full(6, 2, dtype="int8"))


def test_a_file_removed_after_it_was_written_fails_the_commit(Recording, store):
    with pytest.raises(IncompleteObjectError) as raised, dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("raw", ".bin") as f:
            f.write(b"written, then removed by someone else")
        field = staged.field("raw")
        field.backend.remove(field.state.path)
    assert raised.value.field == "raw" and len(Recording()) == 0


def test_a_file_replaced_after_it_was_written_fails_the_commit(djstaged_schema, djstaged_local_store):
    Table = declare(djstaged_schema, "Replaced", "k : int32\n---\nraw : <object@main>")
    with pytest.raises(IncompleteObjectError), dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        with staged.open("raw", ".bin") as f:
            f.write(b"original bytes")
        path = Path(djstaged_local_store.spec["location"]) / staged.field("raw").state.path
        path.unlink()
        path.write_bytes(b"other  bytes ..")  # same size, another file
    assert len(Table()) == 0


@pytest.mark.parametrize("reconnected", [True, False], ids=["reconnected", "still-down"])
def test_a_lease_lost_with_its_session_refuses_the_commit(Recording, store, elsewhere, reconnected):
    """The writer's session ends mid-block: the collector may have run since, so nothing is inserted.

    With a new session (DataJoint reconnects after some errors) fencing finds the
    lease lock gone; without one, the commit's first query fails. Either way the
    caller gets an error, no row exists, and the writer removed its objects.
    """
    connection = Recording.connection
    expected = LeaseLostError if reconnected else (psycopg2.OperationalError, psycopg2.InterfaceError)
    try:
        with pytest.raises(expected), dj_staged.staged_insert1(Recording) as staged:
            staged.rec["recording_id"] = 1
            with staged.open("raw", ".bin") as f:
                f.write(b"written under a lease that then lapsed")
            pid = connection.query("SELECT pg_backend_pid()").fetchone()[0]
            elsewhere.connection.query("SELECT pg_terminate_backend(%s)", args=(pid,))
            wait_for_session_end(elsewhere.connection, pid)
            if reconnected:
                connection.connect()
    finally:
        connection.connect()
    assert len(Recording()) == 0
    assert store_files(store) == []


def test_a_collector_whose_gate_session_ends_stops_before_deleting(Content, store, elsewhere, djstaged_schema):
    """The collector's dedicated session is ended while it is about to delete: it raises GateLostError and
    deletes nothing; the next collection takes the orphan."""
    data = os.urandom(50_000)
    target = old_orphan(Content, data)
    pause = Pause("collector")
    with steps.observe("collector.delete", pause):
        collector = Party("collector", collect, elsewhere, store, now=time.time() + LATER)
        collector.start()
        pause.wait()  # the gate held, the orphan judged collectable
        (gate_pid,) = [pid for ns, _key, pid in advisory_locks(djstaged_schema.connection) if ns == GATE_NS]
        djstaged_schema.connection.query("SELECT pg_terminate_backend(%s)", args=(gate_pid,))
        wait_for_session_end(djstaged_schema.connection, gate_pid)
        pause.go()
        with pytest.raises(GateLostError, match="lost the gate"):
            collector.outcome()
    assert target in store_files(store)
    assert target in collect(elsewhere, store, now=time.time() + LATER).paths
    assert target not in store_files(store)


def test_a_participant_finalizing_a_field_it_did_not_open_breaks_the_protocol(djstaged_schema, djstaged_local_store):
    """A codec whose finalize is handed another participant's state is told so by class, and the block unwinds."""
    from dj_staged.addressing.hashed import HashAddressedState
    from dj_staged.codecs.object import ObjectStaging

    class Confused(ObjectStaging):
        def staged_handle(self, field, *, mode, file_mode="wb"):
            handle = super().staged_handle(field, mode=mode, file_mode=file_mode)
            field.state = HashAddressedState("_staging/elsewhere", None, None, b"")  # another lifecycle's state
            return handle

    class ConfusedCodec(dj.Codec):
        name = "confused_test"

        def get_dtype(self, is_store):
            return "<object>" if is_store else "json"

        def encode(self, value, *, key=None, store_name=None):
            raise NotImplementedError

        def decode(self, stored, *, key=None):
            raise NotImplementedError

    try:
        dj_staged.register_adapter(ConfusedCodec, Confused())
        Table = declare(djstaged_schema, "Confusing", "k : int32\n---\nv : <confused_test@main>")
        with pytest.raises(dj_staged.ProtocolViolationError, match="has no SchemaAddressedState") as raised:
            with dj_staged.staged_insert1(Table) as staged:
                staged.rec["k"] = 1
                with staged.open("v", ".bin") as f:
                    f.write(b"content")
        assert raised.value.field == "v"
        assert len(Table()) == 0
    finally:
        dj.codecs.unregister_codec("confused_test")
