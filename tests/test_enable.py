"""enable()/disable(): explicit, idempotent, reversible, thread-safe; import changes nothing."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import zarr
from conftest import declare
from datajoint.staged_insert import staged_insert1 as datajoint_staged_insert1
from datajoint.table import Table

import dj_staged


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


def test_enable_is_idempotent_and_reversible(restore, dj_schema, dj_local_store):
    Table_ = declare(dj_schema, "Arr", "k : int32\n---\narr : <npy@main>")
    original = Table.__dict__["staged_insert1"]
    dj_staged.enable()
    dj_staged.enable()
    assert dj_staged.is_enabled()
    assert isinstance(Table_.staged_insert1, dj_staged.StagedInsert1)
    with Table_.staged_insert1 as staged:  # <npy@> is rejected by DataJoint's own staged insert
        staged.rec["k"] = 1
        with staged.open("arr", ".npy") as f:
            np.save(f, np.arange(3))
    np.testing.assert_array_equal((Table_ & "k=1").fetch1("arr").load(), np.arange(3))
    dj_staged.disable()
    dj_staged.disable()
    assert Table.__dict__["staged_insert1"] is original
    assert not isinstance(Table_.staged_insert1, dj_staged.StagedInsert1)


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


def test_existing_object_staged_code_runs_unchanged(restore, dj_schema, dj_local_store):
    """DataJoint 2.3.5's documented <object@> staged-insert code, run before and after enable()."""
    Rec = declare(dj_schema, "Imaging", "subject_id : int32\nsession_id : int32\n---\nraw_data : <object@main>")

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
