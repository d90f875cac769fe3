"""enable()/disable(): explicit, idempotent, reversible, thread-safe; import changes nothing.

After enable(), reading ``staged_insert``/``staged_insert1`` gives an inert, documented object: ``help()`` and
``inspect`` work on every table class with no database, and the object opens working blocks.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import pydoc
import subprocess
import sys
import threading

import datajoint as dj
import numpy as np
import pytest
import zarr
from datajoint.staged_insert import staged_insert1 as datajoint_staged_insert1
from datajoint.table import Table
from support.child import PausableChild
from support.tables import declare

import dj_staged
from dj_staged.session.enable import BoundStagedInsert, BoundStagedInsert1


@pytest.fixture
def restore():
    yield
    dj_staged.disable()


def test_import_changes_nothing():
    code = (
        "import datajoint.table as t; before = t.Table.__dict__['staged_insert1']; "
        "import dj_staged; assert t.Table.__dict__['staged_insert1'] is before; "
        "assert not dj_staged.is_enabled(); print('unchanged')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unchanged"


def test_enable_is_idempotent_and_reversible(restore, djstaged_schema, djstaged_local_store):
    Table_ = declare(djstaged_schema, "Arr", "k : int32\n---\narr : <npy@main>")
    original = Table.__dict__["staged_insert1"]
    dj_staged.enable()
    dj_staged.enable()
    assert dj_staged.is_enabled()
    assert isinstance(Table_.staged_insert1, BoundStagedInsert1)
    with Table_.staged_insert1 as staged:  # <npy@> is rejected by DataJoint's own staged insert
        staged.rec["k"] = 1
        with staged.open("arr", ".npy") as f:
            np.save(f, np.arange(3))
    np.testing.assert_array_equal((Table_ & "k=1").fetch1("arr").load(), np.arange(3))
    dj_staged.disable()
    dj_staged.disable()
    assert Table.__dict__["staged_insert1"] is original
    assert not isinstance(Table_.staged_insert1, BoundStagedInsert1)


def test_enable_disable_from_many_threads(restore):
    original = Table.__dict__["staged_insert1"]
    barrier = threading.Barrier(8)

    def flip(i):
        barrier.wait()
        for _ in range(200):
            dj_staged.enable() if i % 2 else dj_staged.disable()

    threads = [threading.Thread(target=flip, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dj_staged.disable()
    assert Table.__dict__["staged_insert1"] is original


def test_existing_object_staged_code_runs_unchanged(restore, djstaged_schema, djstaged_local_store):
    """DataJoint 2.3.5's documented <object@> staged-insert code, run before and after enable()."""
    Rec = declare(djstaged_schema, "Imaging", "subject_id : int32\nsession_id : int32\n---\nraw_data : <object@main>")

    def datajoint_example(session_id):
        with Rec.staged_insert1 as staged:
            staged.rec["subject_id"] = 123
            staged.rec["session_id"] = session_id
            z = zarr.open(staged.store("raw_data", ".zarr"), mode="w", shape=(100, 100), chunks=(10, 100))
            z[:] = np.arange(10000).reshape(100, 100)
            with pytest.raises(Exception, match="Primary key values must be set"):
                with datajoint_staged_insert1(Rec()) as other:
                    other.store("raw_data", ".zarr")

    datajoint_example(1)
    dj_staged.enable()
    datajoint_example(2)
    rows = {r["session_id"]: r for r in Rec.to_dicts()}
    for session_id in (1, 2):
        np.testing.assert_array_equal(
            zarr.open(rows[session_id]["raw_data"].fsmap, mode="r")[:], np.arange(10000).reshape(100, 100)
        )
    meta = dict(Rec.connection.query(f"SELECT session_id, raw_data FROM {Rec.full_table_name}").fetchall())
    assert set(meta[1]) == set(meta[2])
    assert {k: v for k, v in meta[1].items() if k not in ("path", "timestamp")} == {
        k: v for k, v in meta[2].items() if k not in ("path", "timestamp")
    }


def introspect_unconnected() -> dict:
    """In a fresh interpreter whose DataJoint points at no server: enable(), introspect, then try to open a batch."""
    import datajoint.connection

    dj_staged.enable()

    class Unbound(dj.Manual):
        definition = "k : int32\n---\nv : <npy@main>"

    targets = {"Manual": dj.Manual, "Computed": dj.Computed, "Unbound": Unbound, "Unbound()": Unbound()}
    found = {
        f"{label}.{name}": hasattr(t, name)
        for label, t in targets.items()
        for name in ("staged_insert", "staged_insert1")
    }
    members = {name for name, _ in inspect.getmembers(dj.Manual)} & {"staged_insert", "staged_insert1"}
    signatures = {
        label: [(p.name, p.kind.name, p.default) for p in inspect.signature(bound).parameters.values()]
        for label, bound in {"staged_insert": Unbound.staged_insert, "staged_insert1": Unbound().staged_insert1}.items()
    }
    with contextlib.redirect_stdout(io.StringIO()) as shown:
        help(Unbound)
        help(Unbound())
        help(Unbound.staged_insert)
    manual = pydoc.render_doc(dj.Manual, renderer=pydoc.plaintext)
    try:
        with Unbound.staged_insert:
            opened = "opened"
    except Exception as error:  # the batch reads the table's connection only now: there is none
        opened = type(error).__name__
    connected = hasattr(datajoint.connection.conn, "connection")  # dj.conn() made a connection at some point
    try:
        dj.conn()
        server = "reachable"
    except Exception:
        server = "unreachable"
    return dict(
        found=found,
        members=members,
        signatures=signatures,
        help=shown.getvalue(),
        manual=manual,
        opened=opened,
        connected=connected,
        server=server,
    )


def test_introspection_needs_no_database(monkeypatch, tmp_path):
    """DataJoint's test_class_help/test_instance_help use help(); hasattr and inspect must not open anything."""
    nowhere = tmp_path / "no-server"  # a socket directory with no server in it
    nowhere.mkdir()
    for name, value in dict(DJ_BACKEND="postgresql", DJ_HOST=str(nowhere), DJ_PORT="5432", DJ_USER="nobody").items():
        monkeypatch.setenv(name, value)
    with PausableChild(introspect_unconnected) as child:
        seen = child.join(timeout=120)
    assert seen["server"] == "unreachable" and not seen["connected"]
    assert all(seen["found"].values()) and len(seen["found"]) == 8
    assert seen["members"] == {"staged_insert", "staged_insert1"}
    assert seen["signatures"] == {
        "staged_insert": [
            ("chunk_size", "POSITIONAL_OR_KEYWORD", 1000),
            ("allow_direct_insert", "KEYWORD_ONLY", False),
            ("resume", "KEYWORD_ONLY", False),  # refused with the reason: a batch's rows commit together
        ],
        "staged_insert1": [("allow_direct_insert", "KEYWORD_ONLY", False), ("resume", "KEYWORD_ONLY", False)],
    }
    assert "stage many rows, insert them together" in seen["help"]
    assert "staged_insert = <dj-staged staged_insert of Manual>" in seen["manual"]
    assert "staged_insert1 = <dj-staged staged_insert1 of Manual()>" in seen["manual"]
    assert seen["opened"] == "AssertionError"  # DataJoint's check that the table has a connection, at the open


def test_help_on_tables_bound_to_a_schema(restore, djstaged_schema, djstaged_local_store):
    """As DataJoint's own test_declare.py::test_class_help and ::test_instance_help, after enable()."""
    Table_ = declare(djstaged_schema, "Helped", "k : int32\n---\narr : <npy@main>")
    dj_staged.enable()
    with contextlib.redirect_stdout(io.StringIO()) as shown:
        help(Table_)
        help(Table_())
    assert shown.getvalue().count("staged_insert = <dj-staged staged_insert of Helped>") == 2
    members = dict(inspect.getmembers(Table_()))
    assert isinstance(members["staged_insert"], BoundStagedInsert)
    assert isinstance(members["staged_insert1"], BoundStagedInsert1)
    assert Table_.definition in Table_.__doc__


def test_inert_objects_open_working_blocks(restore, djstaged_schema, djstaged_local_store):
    Table_ = declare(djstaged_schema, "Opened", "k : int32\n---\narr : <npy@main>")
    dj_staged.enable()

    def row(staged, k):
        staged.rec["k"] = k
        with staged.open("arr", ".npy") as f:
            np.save(f, np.arange(k + 1))

    batch_opener, row_opener = Table_.staged_insert, Table_().staged_insert1
    with batch_opener as batch:
        with batch.row() as staged:
            row(staged, 0)
        with batch_opener as inner:  # the same object, nested: a second batch
            with inner.row() as staged:
                row(staged, 1)
    with pytest.raises(ValueError, match="unwound"):
        with batch_opener as batch:
            with batch.row() as staged:
                row(staged, 9)
            raise ValueError("unwound")
    with Table_().staged_insert(chunk_size=1, allow_direct_insert=True) as batch:
        for k in (2, 3):
            with batch.row() as staged:
                row(staged, k)
    with row_opener as staged:
        row(staged, 4)
    with row_opener as staged:  # used again after its block ended
        row(staged, 5)
    with Table_().staged_insert1(allow_direct_insert=True) as staged:
        row(staged, 6)
    rows = {r["k"]: r["arr"].load() for r in Table_.to_dicts()}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5, 6]
    for k, arr in rows.items():
        np.testing.assert_array_equal(arr, np.arange(k + 1))
