"""Staged inserts inside DataJoint's transactions, and refusals before the first byte.

Inside ``populate``'s ``make()`` or ``with conn.transaction:`` the rows go into
the open transaction and their objects' fate is decided when it ends: kept on
commit, removed at once on rollback (a canonical hash object only when nothing
else uses it). What the insert would refuse is refused before any byte is
written, or at finalization before anything is hashed at length or promoted.
"""

from __future__ import annotations

import os
from pathlib import Path

import datajoint as dj
import numpy as np
import psycopg2
import pytest
from support.stores import lease_files, store_files
from support.tables import declare

import dj_staged
from dj_staged import steps
from dj_staged.errors import ContentError, NothingWrittenError, StagedInsertError
from dj_staged.leases import held_lease_keys


class Abort(Exception):
    """Raised by a make() after its staged block."""


@pytest.fixture
def pipeline(djstaged_schema, store):
    """``Session`` (manual) -> ``Trace`` (computed, a staged <npy@> and <hash@>), with make() behaviour per test."""
    Session = declare(djstaged_schema, "Session", "session_id : int32")
    behaviour = {"mode": "ok"}

    class Trace(dj.Computed):
        definition = f"""
        -> Session
        ---
        trace : <npy@{store.name}>
        digest : <hash@{store.name}>
        """

        def make(self, key):
            mode = behaviour["mode"]
            if mode == "batch":
                with dj_staged.staged_insert(self) as batch, batch.row() as staged:
                    staged.rec.update(key)
                    write_trace(staged, key)
                return
            with dj_staged.staged_insert1(self) as staged:
                staged.rec.update(key)
                write_trace(staged, key)
                if mode == "inside":
                    raise Abort("inside the block")
            if mode == "after":
                raise Abort("after a clean block")

    Trace = djstaged_schema(Trace, context={"Session": Session})
    Session.insert([{"session_id": i} for i in (1, 2)])
    return Session, Trace, behaviour


def write_trace(staged, key) -> None:
    with staged.open("trace", ".npy") as f:
        np.save(f, np.full(10, key["session_id"], dtype="float64"))
    with staged.open("digest", ".bin") as f:
        f.write(f"digest of session {key['session_id']}".encode())


@pytest.mark.parametrize("mode", ["ok", "batch"])
def test_populate_commits_rows_and_keeps_objects(pipeline, store, mode):
    _Session, Trace, behaviour = pipeline
    behaviour["mode"] = mode
    Trace.populate()
    assert len(Trace()) == 2 and lease_files(store) == []
    for session_id in (1, 2):
        row = (Trace & {"session_id": session_id}).fetch1()
        np.testing.assert_array_equal(row["trace"].load(), np.full(10, session_id, dtype="float64"))
        assert row["digest"] == f"digest of session {session_id}".encode()
    assert len(store_files(store)) == 4


@pytest.mark.parametrize("mode", ["after", "inside"])
def test_populate_rolled_back_removes_the_objects_at_once(pipeline, store, mode):
    _Session, Trace, behaviour = pipeline
    behaviour["mode"] = mode
    with pytest.raises(Abort):
        Trace.populate()
    assert len(Trace()) == 0
    assert store_files(store) == [] and lease_files(store) == []  # no gc needed
    assert not held_lease_keys(Trace.connection)


def test_rollback_never_removes_a_hash_object_that_existed_before(djstaged_schema, store):
    Table = declare(djstaged_schema, "Shared", f"k : int32\n---\nv : <hash@{store.name}>")
    Table.insert1({"k": 1, "v": b"shared content"})
    before = store_files(store)
    with pytest.raises(Abort), Table.connection.transaction:
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["k"] = 2
            with staged.open("v", ".bin") as f:
                f.write(b"shared content")  # deduplicates onto the committed row's object
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["k"] = 3
            with staged.open("v", ".bin") as f:
                f.write(b"new content")  # promoted by this transaction
        raise Abort
    assert store_files(store) == before
    assert Table.fetch1("v") == b"shared content"


def test_user_transaction_committed_keeps_rows_and_objects(djstaged_schema, store):
    Table = declare(djstaged_schema, "Pair", f"k : int32\n---\nv : <hash@{store.name}>\nw : <object@{store.name}>")
    with Table.connection.transaction:
        for k in (1, 2):
            with dj_staged.staged_insert1(Table) as staged:
                staged.rec["k"] = k
                with staged.open("v", ".bin") as f:
                    f.write(bytes([k]) * 100)
                with staged.open("w", ".bin") as f:
                    f.write(b"w" * k)
        assert len([f for f in lease_files(store) if f.endswith(("/lease.json", ".jsonl"))]) == 2  # until the commit
    assert lease_files(store) == []
    assert [(r["v"], r["w"].read()) for r in Table.to_dicts()] == [(b"\x01" * 100, b"w"), (b"\x02" * 100, b"ww")]


def test_disable_refuses_while_a_transaction_holds_staged_rows(djstaged_schema, store):
    Table = declare(djstaged_schema, "Pending", f"k : int32\n---\nv : <hash@{store.name}>")
    dj_staged.enable()
    try:
        with Table.connection.transaction:
            with Table().staged_insert1 as staged:
                staged.rec["k"] = 1
                with staged.open("v", ".bin") as f:
                    f.write(b"pending")
            with pytest.raises(StagedInsertError):
                dj_staged.disable()
            assert "commit_transaction" in vars(Table.connection)  # the hook, on this connection only
    finally:
        dj_staged.disable()
    assert "commit_transaction" not in vars(Table.connection) and not dj_staged.is_enabled()
    assert Table.fetch1("v") == b"pending"


# --- refusals ---------------------------------------------------------------------------------------


def test_auto_populated_table_is_refused_outside_make_before_the_first_byte(pipeline, store):
    _Session, Trace, _ = pipeline
    reached = []
    with pytest.raises(dj_staged.AutoPopulatedInsertError, match="can only be done inside its make method") as raised:
        with dj_staged.staged_insert1(Trace) as staged:
            staged.rec["session_id"] = 1
            staged.open("trace", ".npy")
            reached.append("after open")
    assert isinstance(raised.value, dj.DataJointError)  # as DataJoint's own insert refuses it
    assert reached == [] and store_files(store, leases=True) == []


@pytest.mark.parametrize("form", ["staged_insert1", "staged_insert", "enabled"])
def test_allow_direct_insert_permits_it(pipeline, store, form):
    _Session, Trace, _ = pipeline
    if form == "staged_insert1":
        with dj_staged.staged_insert1(Trace, allow_direct_insert=True) as staged:
            staged.rec["session_id"] = 1
            write_trace(staged, {"session_id": 1})
    elif form == "staged_insert":
        with dj_staged.staged_insert(Trace, allow_direct_insert=True) as batch, batch.row() as staged:
            staged.rec["session_id"] = 1
            write_trace(staged, {"session_id": 1})
    else:
        dj_staged.enable()
        try:
            with Trace().staged_insert1(allow_direct_insert=True) as staged:
                staged.rec["session_id"] = 1
                write_trace(staged, {"session_id": 1})
        finally:
            dj_staged.disable()
    assert len(Trace()) == 1


def test_a_key_already_in_the_table_is_refused_before_the_first_byte(djstaged_schema, store):
    Table = declare(djstaged_schema, "Taken", f"k : int32\n---\nv : <hash@{store.name}>")
    Table.insert1({"k": 1, "v": b"first"})
    before = store_files(store)
    reached = []
    with pytest.raises(dj.errors.DuplicateError), dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        staged.open("v", ".bin")
        reached.append("after open")
    assert reached == [] and store_files(store, leases=True) == before


@pytest.mark.parametrize(
    "plain, error",
    [
        ({}, dj.errors.MissingAttributeError),  # `note` is NOT NULL without a default
        ({"note": "x", "nonexistent": 1}, KeyError),  # DataJoint: "`nonexistent` is not in the table heading"
        ({"note": "x", "count": "not a number"}, ValueError),  # DataJoint converts numeric values itself
        ({"note": "far too long for the column"}, psycopg2.DataError),
    ],
    ids=["missing", "unknown", "wrong-type", "too-long"],
)
def test_what_the_insert_would_refuse_is_refused_before_hashing_or_promoting(djstaged_schema, store, plain, error):
    definition = f"k : int32\n---\nnote : varchar(8)\ncount = 0 : int32\nv : <blob@{store.name}>"
    Table = declare(djstaged_schema, "Checked", definition)
    promoted = []
    with steps.observe("writer.promote", lambda **context: promoted.append(context)):
        with pytest.raises(error), dj_staged.staged_insert1(Table) as staged:
            staged.rec.update({"k": 1, **plain})
            with staged.open("v", ".bin") as f:  # no size: it would be re-read and hashed at exit
                f.write(os.urandom(100_000))
    assert promoted == [] and len(Table()) == 0
    assert store_files(store, leases=True) == []


# --- empty values: an open() handle closed after zero bytes is an empty value -------------------------


@pytest.mark.parametrize("codec", ["object", "hash", "blob", "attach"])
def test_an_empty_open_handle_is_an_empty_value(djstaged_schema, store, codec, tmp_path):
    Table = declare(djstaged_schema, "Empty", f"k : int32\n---\nv : <{codec}@{store.name}>")
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        if codec == "attach":
            staged.set_filename("v", "empty.txt")
        staged.open("v", ".bin").close()
    source = tmp_path / "empty.txt"
    source.write_bytes(b"")
    Table.insert1({"k": 2, "v": str(source) if codec in ("attach", "object") else b""})
    with dj.config.override(download_path=str(tmp_path / "downloads")):
        staged_value, ordinary = (Table & "k=1").fetch1("v"), (Table & "k=2").fetch1("v")
    if codec == "object":
        assert staged_value.read() == ordinary.read() == b""
    elif codec == "attach":
        assert os.path.basename(staged_value) == "empty.txt" and Path(staged_value).read_bytes() == b""
    else:
        assert staged_value == ordinary == b""


@pytest.mark.parametrize("codec, ext, error", [("npy", ".npy", ContentError), ("zarr", ".zarr", NothingWrittenError)])
def test_an_empty_value_that_is_not_a_value_is_refused(djstaged_schema, store, codec, ext, error):
    Table = declare(djstaged_schema, "NotAValue", f"k : int32\n---\nv : <{codec}@{store.name}>")
    with pytest.raises(error) as raised, dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        if codec == "zarr":
            staged.store("v", ext)
        else:
            staged.open("v", ext).close()
    assert raised.value.field == "v" and len(Table()) == 0 and store_files(store) == []


def test_a_store_handle_with_nothing_written_is_refused(djstaged_schema, store):
    Table = declare(djstaged_schema, "NoDirectory", f"k : int32\n---\nv : <object@{store.name}>")
    with pytest.raises(NothingWrittenError), dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        staged.store("v", ".zarr")
    assert len(Table()) == 0 and store_files(store) == []


# --- keys compared as the table types them ----------------------------------------------------------


def test_the_same_key_typed_two_ways_is_refused_at_the_second_handle(djstaged_schema, store):
    Table = declare(djstaged_schema, "Typed", f"k : int32\n---\nv : <hash@{store.name}>")
    reached = []
    with dj_staged.staged_insert(Table) as batch:
        with batch.row() as staged:
            staged.rec["k"] = 1
            with staged.open("v", ".bin") as f:
                f.write(b"first")
        with pytest.raises(dj.errors.DuplicateError), batch.row() as staged:
            staged.rec["k"] = "1"
            staged.open("v", ".bin")
            reached.append("after open")
    assert reached == [] and Table.fetch1("v") == b"first"


def test_a_collection_between_the_block_and_populates_commit_takes_nothing(pipeline, store, elsewhere):
    """make() stages its row, then a collector in another session runs before populate commits: the lease holds."""
    import dj_staged.gc

    _Session, Trace, behaviour = pipeline
    behaviour["mode"] = "ok"
    reports = []
    original = Trace.make

    def make_then_collect(self, key):
        original(self, key)  # the staged block has ended; populate has not committed yet
        reports.append(dj_staged.gc.collect(elsewhere, store=store.name, grace=0, dry_run=False))

    Trace.make = make_then_collect
    try:
        Trace.populate()
    finally:
        Trace.make = original
    assert len(reports) == 2 and all(report.deleted == 0 for report in reports)
    for session_id in (1, 2):
        row = (Trace & {"session_id": session_id}).fetch1()
        np.testing.assert_array_equal(row["trace"].load(), np.full(10, session_id, dtype="float64"))
        assert row["digest"] == f"digest of session {session_id}".encode()


def test_an_interrupted_block_is_reclaimed_by_the_next_default_gc_delete(djstaged_schema, store):
    from dj_staged.cli import main

    Table = declare(
        djstaged_schema, "Interrupted", f"k : int32\n---\nv : <hash@{store.name}>\nw : <object@{store.name}>"
    )
    with pytest.raises(KeyboardInterrupt), dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        with staged.open("v", ".bin") as f:
            f.write(b"never committed")
        with staged.open("w", ".bin") as f:
            f.write(b"never committed either")
        raise KeyboardInterrupt  # a notebook's stop button
    assert len(store_files(store)) == 2
    assert main(["gc", "--schema", djstaged_schema.database, "--store", store.name, "--delete"]) == 0  # default grace
    assert store_files(store, leases=True) == []
