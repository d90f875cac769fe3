"""A ``store()`` handle is sealed when its block ends: a committed row's directory cannot change through it.

Once the block has finalized, unwound or been abandoned, every write through the handle is refused with
``HandleModeError``: through the ``FSMap`` itself, through a Zarr array opened on it, and through a copy
pickled to another process (as Dask sends it to a worker), which learns of the seal from the store.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr
from support import workers
from support.child import PausableChild
from support.stores import store_files
from support.tables import declare

import dj_staged
from dj_staged.errors import HandleModeError


@pytest.fixture
def Capture(djstaged_schema, store):
    return declare(djstaged_schema, "Capture", f"capture_id : int32\n---\nraw : <object@{store.name}>")


def stored(table, key: int) -> dict:
    return table.connection.query(
        f"SELECT raw FROM {table.full_table_name} WHERE capture_id = %s", args=(key,)
    ).fetchone()[0]


def test_a_committed_rows_directory_cannot_change_through_its_handle(Capture, store):
    with dj_staged.staged_insert1(Capture) as staged:
        staged.rec["capture_id"] = 1
        handle = staged.store("raw", ".parts")
        handle["a.txt"] = b"original"
    before = sorted(store_files(store))
    with pytest.raises(HandleModeError, match="sealed") as raised:
        handle["a.txt"] = b"overwritten"
    assert raised.value.field == "raw"
    with pytest.raises(HandleModeError):
        handle["b.txt"] = b"new"
    with pytest.raises(KeyError) as deleting:  # FSMap turns every error of a deletion into a KeyError
        del handle["a.txt"]
    assert isinstance(deleting.value.__cause__, HandleModeError)
    assert sorted(store_files(store)) == before
    value = stored(Capture, 1)
    assert value["item_count"] == 1
    assert (Capture & {"capture_id": 1}).fetch1("raw").fsmap["a.txt"] == b"original"


def test_a_zarr_array_on_the_handle_is_sealed_too(Capture, store):
    with dj_staged.staged_insert1(Capture) as staged:
        staged.rec["capture_id"] = 1
        z = zarr.open(staged.store("raw", ".zarr"), mode="w", shape=(4, 4), chunks=(2, 4), dtype="int32")
        z[:] = 1
    with pytest.raises(HandleModeError):
        z[0] = 5
    with pytest.raises(HandleModeError):
        z.resize((8, 4))
    fetched = zarr.open((Capture & {"capture_id": 1}).fetch1("raw").fsmap, mode="r")
    np.testing.assert_array_equal(fetched[:], np.ones((4, 4), dtype="int32"))


def test_a_handle_of_an_unwound_block_writes_nothing_more(Capture, store):
    with pytest.raises(RuntimeError, match="acquisition failed"):
        with dj_staged.staged_insert1(Capture) as staged:
            staged.rec["capture_id"] = 1
            handle = staged.store("raw", ".parts")
            handle["a.txt"] = b"partial"
            raise RuntimeError("acquisition failed")
    with pytest.raises(HandleModeError):
        handle["b.txt"] = b"late"
    assert store_files(store, leases=True) == []
    assert len(Capture()) == 0


def test_a_copy_in_another_process_writes_during_the_block_and_is_refused_after(Capture, store):
    """The copy finds the handle's open marker in the store while the block runs, and no marker after it."""
    with dj_staged.staged_insert1(Capture) as staged:
        staged.rec["capture_id"] = 1
        handle = staged.store("raw", ".parts")
        handle["a.txt"] = b"from this process"
        payload = pickle.dumps(handle)
        with PausableChild(workers.write_through, payload, "b.txt", b"from a worker") as child:
            assert child.join(timeout=120) == "ok"
    assert stored(Capture, 1)["item_count"] == 2
    assert [f for f in store_files(store, leases=True) if f.endswith(".open")] == []  # the marker went with the block
    with PausableChild(workers.write_through, payload, "c.txt", b"too late") as child:
        assert child.join(timeout=120) == "HandleModeError"
    assert stored(Capture, 1)["item_count"] == 2
    assert len([f for f in store_files(store) if f.startswith(stored(Capture, 1)["path"] + "/")]) == 2


def test_a_handle_that_never_leaves_the_process_writes_no_marker(Capture, store):
    with dj_staged.staged_insert1(Capture) as staged:
        staged.rec["capture_id"] = 1
        handle = staged.store("raw", ".parts")
        handle["a.txt"] = b"here"
        assert [f for f in store_files(store, leases=True) if f.endswith(".open")] == []
    assert store_files(store, leases=True) == [f"{stored(Capture, 1)['path']}/a.txt"]
