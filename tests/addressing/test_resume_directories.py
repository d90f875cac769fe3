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


@pytest.mark.parametrize("upto", [1, 5, 11, 12])
def test_a_killed_zarr_writer_resumes(upto, djstaged_postgres, djstaged_schema, store):
    definition = f"k : int32\n---\nframes : <object@{store.name}>"
    table = declare(djstaged_schema, "Movie", definition)
    child = PausableChild(
        resuming.killed_zarr_writer,
        dataclasses.asdict(djstaged_postgres),
        dict(dj.config.stores),
        djstaged_schema.database,
        definition,
        FRAMES,
        upto,
    )
    with child, pytest.raises(ChildDied) as died:
        child.join(timeout=120)
    assert died.value.exitcode == -9
    table.connection.query("SELECT pg_advisory_lock(%s, %s)", args=resume_lock(table))  # the killed session ended
    table.connection.query("SELECT pg_advisory_unlock(%s, %s)", args=resume_lock(table))
    done = resume(table)
    assert done <= set(range(upto))
    check(table, store)


def resume_lock(table) -> tuple[int, int]:
    from dj_staged.leases.claims import RESUME_NS, claim_key
    from dj_staged.leases.takeover import resume_key

    return RESUME_NS, claim_key(resume_key(table.database, table.table_name, {"k": resuming.KEY}, "frames"))


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
