"""``store()`` with ``resume=True`` (issue #27): a Zarr array written chunk by chunk, interrupted, then resumed
with the keys its handle says are durable skipped."""

from __future__ import annotations

import dataclasses

import datajoint as dj
import numpy as np
import pytest
import zarr
from support import resuming
from support.child import ChildDied, PausableChild
from support.paths import TEST_PYTHONPATH
from support.resumed import wait_for_the_killed_session
from support.stores import lease_files, store_files
from support.tables import declare

import dj_staged
from dj_staged.errors import ResumeRestartedWarning
from dj_staged.stores import resolve_store

FRAMES = np.arange(12 * 16 * 16, dtype="uint16").reshape(12, 16, 16)


@pytest.fixture(autouse=True)
def small_units(monkeypatch):
    monkeypatch.setenv("DJ_STAGED_PART_SIZE", str(2 * 16 * 16 * 2))  # a checkpoint every few chunks
    monkeypatch.setenv("PYTHONPATH", ":".join(TEST_PYTHONPATH))  # the child imports support/resuming.py


def resume(table) -> set[int]:
    """Resume row ``k = 1``, writing the frames whose chunk its handle does not list durable; those it skipped."""
    with dj_staged.staged_insert1(table, resume=True) as staged:
        staged.rec["k"] = resuming.KEY
        fsmap = staged.store("frames", ".zarr")
        durable = set(fsmap.durable)
        z = zarr.open(fsmap, mode="a", shape=FRAMES.shape, chunks=(1, 16, 16), dtype="uint16")
        done = {i for i in range(len(FRAMES)) if f"c/{i}/0/0" in durable or f"{i}.0.0" in durable}
        for i in range(len(FRAMES)):
            if i not in done:
                z[i] = FRAMES[i]
    return done


def check(table, store) -> None:
    value = (table & {"k": resuming.KEY}).fetch1("frames")
    np.testing.assert_array_equal(zarr.open(value.fsmap, mode="r")[:], FRAMES)
    assert lease_files(store) == []
    assert all(f.startswith(value.path + "/") for f in store_files(store))


def test_a_zarr_array_resumes_at_the_chunks_not_yet_durable(djstaged_schema, store):
    table = declare(djstaged_schema, "Movie", f"k : int32\n---\nframes : <object@{store.name}>")
    with pytest.raises(KeyboardInterrupt), dj_staged.staged_insert1(table, resume=True) as staged:
        staged.rec["k"] = resuming.KEY
        z = zarr.open(staged.store("frames", ".zarr"), mode="w", shape=FRAMES.shape, chunks=(1, 16, 16), dtype="uint16")
        for i in range(7):
            z[i] = FRAMES[i]
        raise KeyboardInterrupt  # the block records what it wrote last before it lets go
    assert resume(table) == set(range(7))
    check(table, store)


def kill_and_resume_zarr(djstaged_postgres, djstaged_schema, store, upto: int, codec: str) -> None:
    """A child writes frames ``0..upto-1`` into ``<codec@store>`` and is SIGKILLed; the resumed block writes the
    frames its handle does not list durable, and the array holds every frame."""
    definition = f"k : int32\n---\nframes : <{codec}@{store.name}>"
    table = declare(djstaged_schema, "Movie", definition)
    child = PausableChild(
        resuming.killed_zarr_writer,
        dataclasses.asdict(djstaged_postgres),
        dict(dj.config.stores),
        djstaged_schema.database,
        definition,
        FRAMES,
        upto,
        codec == "zarr",
    )
    with child, pytest.raises(ChildDied) as died:
        child.join(timeout=120)
    assert died.value.exitcode == -9
    wait_for_the_killed_session(table, "frames")
    if codec == "zarr":
        done = zarr_block(table, resuming.KEY, FRAMES)
        np.testing.assert_array_equal((table & {"k": resuming.KEY}).fetch1("frames")[:], FRAMES)
        assert lease_files(store) == []
    else:
        done = resume(table)
        check(table, store)
    assert done <= set(range(upto))


@pytest.mark.parametrize("upto", [1, 5, 11, 12])
def test_a_killed_zarr_writer_resumes(upto, djstaged_postgres, djstaged_schema, store):
    kill_and_resume_zarr(djstaged_postgres, djstaged_schema, store, upto, "object")


@pytest.mark.parametrize("upto", range(len(FRAMES) + 1))
@pytest.mark.parametrize("codec", ["object", "zarr"])
def test_a_zarr_writer_killed_after_any_frame_resumes_locally(
    codec, upto, djstaged_postgres, djstaged_schema, djstaged_local_store
):
    """Every kill point of the array, between frames (a checkpoint lands every few chunks), through ``store()`` on
    ``<object@>`` and through ``create_zarr_array`` on ``<zarr@>``."""
    kill_and_resume_zarr(djstaged_postgres, djstaged_schema, djstaged_local_store, upto, codec)


def test_a_chunk_removed_since_starts_the_directory_over(djstaged_schema, djstaged_local_store):
    table = declare(djstaged_schema, "Movie", "k : int32\n---\nframes : <object@main>")
    with pytest.raises(KeyboardInterrupt), dj_staged.staged_insert1(table, resume=True) as staged:
        staged.rec["k"] = resuming.KEY
        z = zarr.open(staged.store("frames", ".zarr"), mode="w", shape=FRAMES.shape, chunks=(1, 16, 16), dtype="uint16")
        for i in range(9):
            z[i] = FRAMES[i]
        raise KeyboardInterrupt
    chunk = next(f for f in store_files(djstaged_local_store) if f.endswith("/c/0/0/0"))
    resolve_store(djstaged_local_store.name, dj.config).remove(chunk)  # someone removed a durable chunk
    with pytest.warns(ResumeRestartedWarning, match="c/0/0/0 is gone"):
        assert resume(table) == set()
    check(table, djstaged_local_store)


def zarr_block(table, k: int, frames: np.ndarray, upto: int | None = None) -> set[int]:
    """Row ``k``'s ``<zarr@>`` field through ``create_zarr_array`` in a ``resume=True`` block: the frames whose chunk
    the handle does not list durable, then (``upto``) a ``KeyboardInterrupt`` after frame ``upto - 1``; the frames
    skipped."""
    with dj_staged.staged_insert1(table, resume=True) as staged:
        staged.rec["k"] = k
        z = dj_staged.create_zarr_array(staged, "frames", shape=frames.shape, chunks=(1, 16, 16), dtype=frames.dtype)
        durable = staged.store("frames", ".zarr").durable
        done = {i for i in range(len(frames)) if f"c/{i}/0/0" in durable}
        for i in range(len(frames) if upto is None else upto):
            if i not in done:
                z[i] = frames[i]
        if upto is not None:
            raise KeyboardInterrupt
    return done


def zarr_value(table, k: int) -> dict:
    return table.connection.query(f"SELECT frames FROM {table.full_table_name} WHERE k = %s", args=(k,)).fetchone()[0]


def test_a_zarr_codec_array_resumes_at_the_chunks_not_yet_durable(djstaged_schema, store):
    """``create_zarr_array`` in the resumed block reopens the array the interrupted one created; the value is what an
    uninterrupted block stores (the path aside)."""
    table = declare(djstaged_schema, "Movie", f"k : int32\n---\nframes : <zarr@{store.name}>")
    with pytest.raises(KeyboardInterrupt):
        zarr_block(table, resuming.KEY, FRAMES, upto=7)
    assert zarr_block(table, resuming.KEY, FRAMES) == set(range(7))
    zarr_block(table, 2, FRAMES)
    np.testing.assert_array_equal((table & {"k": resuming.KEY}).fetch1("frames")[:], FRAMES)
    resumed, plain = zarr_value(table, resuming.KEY), zarr_value(table, 2)
    assert {k: v for k, v in resumed.items() if k != "path"} == {k: v for k, v in plain.items() if k != "path"}
    assert lease_files(store) == []


def test_a_zarr_codec_array_of_another_shape_starts_over(djstaged_schema, djstaged_local_store):
    table = declare(djstaged_schema, "Movie", "k : int32\n---\nframes : <zarr@main>")
    with pytest.raises(KeyboardInterrupt):
        zarr_block(table, resuming.KEY, FRAMES[:10], upto=7)
    with pytest.warns(ResumeRestartedWarning, match="differs from this one"):
        assert zarr_block(table, resuming.KEY, FRAMES) == set()
    np.testing.assert_array_equal((table & {"k": resuming.KEY}).fetch1("frames")[:], FRAMES)
    assert lease_files(djstaged_local_store) == []
