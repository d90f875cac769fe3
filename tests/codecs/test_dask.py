"""Dask writes a staged field in parallel: threads of this process, or a distributed cluster of 2 processes.

On a local store and on S3 (moto): the row is inserted once the compute ends, a failing task leaves no row
and nothing in the store, and the client's memory does not grow with the array. Then `populate(reserve_jobs=True)`
in several processes, each staging its rows.
"""

from __future__ import annotations

import multiprocessing

import dask.array as da
import datajoint as dj
import numpy as np
import pytest
import zarr
from datajoint.hash_registry import get_store_backend
from support import workers
from support.tables import declare

import dj_staged
from dj_staged._datajoint import full_path
from dj_staged.dask import default_client, to_zarr
from dj_staged.errors import HandleModeError
from dj_staged.measure import measured
from dj_staged.stores import resolve_store

MIB = 1 << 20
SIDE = 512  # frames of SIDE x SIDE uint32: 1 MiB each


def volume(frames: int, per_chunk: int = 4, fail_at: int | None = None) -> da.Array:
    """A lazy uint32 volume of ``frames`` frames, ``per_chunk`` frames per Dask chunk (and Zarr chunk)."""
    chunks = ((per_chunk,) * (frames // per_chunk), (SIDE,), (SIDE,))
    meta = np.empty((0, 0, 0), dtype="uint32")
    return da.map_blocks(workers.frames_block, chunks=chunks, dtype="uint32", meta=meta, fail_at=fail_at)


def expected_frame(index: int) -> np.ndarray:
    plane = SIDE * SIDE
    return np.arange(index * plane, (index + 1) * plane, dtype="uint32").reshape(SIDE, SIDE)


def everything_in(store) -> list[str]:
    """Every object in the store, leases included."""
    return sorted(resolve_store(store.name, dj.config).list_files(""))


@pytest.fixture
def Scan(djstaged_schema, store):
    return declare(djstaged_schema, "Scan", f"scan_id : int32\n---\nvolume : <zarr@{store.name}>")


@pytest.fixture(scope="module")
def cluster(djstaged_gcs_server):
    """A distributed cluster of 2 worker processes, one thread each, and its client. Its workers inherit the
    environment that points gcsfs at the GCS emulator, so that is set before they start."""
    from distributed import Client, LocalCluster

    # ":0": the scheduler's HTTP server on a free port, so runs side by side do not compete for 8787
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        with Client(local, set_as_default=False) as client:
            yield client


@pytest.fixture(params=["threads", "distributed"])
def scheduler(request):
    """``to_zarr``'s ``client``: None (this process's threads) or the cluster's client."""
    return None if request.param == "threads" else request.getfixturevalue("cluster")


def stage(table, array: da.Array, client) -> None:
    with dj_staged.staged_insert1(table) as staged:
        staged.rec["scan_id"] = 1
        to_zarr(array, staged.store("volume", ".zarr"), client=client)


def check_row(table, frames: int) -> None:
    fetched = (table & {"scan_id": 1}).fetch1("volume")
    assert fetched.shape == (frames, SIDE, SIDE) and fetched.chunks == (4, SIDE, SIDE)
    for index in sorted({0, frames // 2, frames - 1}):
        np.testing.assert_array_equal(fetched[index], expected_frame(index))


def test_parallel_write_finalizes_the_row(Scan, store, scheduler):
    stage(Scan, volume(16), scheduler)
    assert len(Scan()) == 1
    check_row(Scan, 16)
    (value,) = Scan.connection.query(f"SELECT volume FROM {Scan.full_table_name}").fetchone()
    assert value["shape"] == [16, SIDE, SIDE] and value["dtype"] == "uint32" and value["store"] == store.name
    assert len([p for p in everything_in(store) if p.startswith(value["path"] + "/c/")]) == 4  # one file per chunk
    assert [p for p in everything_in(store) if not p.startswith(value["path"] + "/")] == []  # no lease left


def test_the_default_client_computes_when_none_is_given(cluster, djstaged_schema, djstaged_local_store):
    from distributed import Client, get_task_stream

    Scan = declare(djstaged_schema, "Scan", "scan_id : int32\n---\nvolume : <zarr@main>")
    assert default_client() is None  # no default Client: threads
    with Client(cluster.scheduler.address) as client:  # now Dask's scheduler, as a Client is by default
        assert default_client() is client
        with get_task_stream(client) as stream:
            stage(Scan, volume(8), None)
    assert len([task for task in stream.data if "store-map" in str(task["key"])]) == 2  # one per chunk, on the cluster
    assert default_client() is None
    check_row(Scan, 8)


def test_a_failing_task_leaves_no_row_and_nothing_in_the_store(Scan, store, scheduler):
    with pytest.raises(RuntimeError, match="reconstruction failed in block 5"):
        stage(Scan, volume(64, fail_at=5), scheduler)
    assert len(Scan()) == 0
    assert everything_in(store) == []


@pytest.mark.parametrize("client", ["threads", "distributed"])
def test_client_memory_stays_flat(djstaged_schema, djstaged_local_store, request, client):
    """256 MiB written, by this process's threads or by the cluster: the client holds a few 4 MiB chunks at most."""
    Scan = declare(djstaged_schema, "Scan", "scan_id : int32\n---\nvolume : <zarr@main>")
    scheduler = None if client == "threads" else request.getfixturevalue("cluster")
    stage(Scan, volume(8), scheduler)  # warm: imports, thread pools, the allocator's arenas are not the array's
    (Scan & {"scan_id": 1}).delete()
    with measured() as memory:
        stage(Scan, volume(256), scheduler)
    assert memory.peak_above_before < 64 * MIB, f"peak {memory.peak_above_before / MIB:.0f} MiB above the start"
    check_row(Scan, 256)


def test_populate_with_reserved_jobs_across_processes(
    djstaged_postgres, djstaged_local_store, djstaged_schema, djstaged_connection
):
    """Three processes populate one table: each stages rows, no key is made twice, every key is made."""
    Source, Volume = workers.populate_pipeline(djstaged_schema.database, djstaged_connection)
    Source.insert([{"source_id": i, "frames": 8} for i in range(1, 7)])
    # The jobs table, once, before the workers: DataJoint 2.3.5 declares it on first use, and workers that start
    # together race to (psycopg2's DuplicateTable for its index in one of them).
    Volume.jobs.refresh()
    db = {
        "host": djstaged_postgres.host,
        "port": djstaged_postgres.port,
        "user": djstaged_postgres.user,
        "password": "",
    }
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(3) as pool:
        barrier = manager.Barrier(3)
        pending = [
            pool.apply_async(workers.populate_worker, (db, dict(dj.config.stores), djstaged_schema.database, barrier))
            for _ in range(3)
        ]
        results = [p.get(timeout=300) for p in pending]
    made = [keys for keys, _ in results]
    assert [errors for _, errors in results] == [[], [], []]
    assert all(made) and sorted(sum(made, [])) == [1, 2, 3, 4, 5, 6]  # each worker made rows, none twice
    assert len(Volume()) == 6 and len(Volume.jobs & "status = 'error'") == 0
    plane = np.arange(7 * 64 * 64, 8 * 64 * 64, dtype="uint32").reshape(64, 64)  # frame 7 of every volume
    for key in range(1, 7):
        np.testing.assert_array_equal((Volume & {"source_id": key}).fetch1("volume")[7], plane + key)


def test_a_listing_cached_meanwhile_does_not_hide_what_the_workers_wrote(djstaged_schema, djstaged_s3_store, cluster):
    """The workers write through unpickled copies of the handle; a listing this process cached before the block
    (a user's) knows nothing of it, and finalization does not trust it (tests/stores/test_fresh_listing.py)."""
    Scan = declare(djstaged_schema, "Scan", f"scan_id : int32\n---\nvolume : <zarr@{djstaged_s3_store.name}>")
    stage(Scan, volume(8), cluster)
    (Scan & {"scan_id": 1}).delete()
    backend = get_store_backend(djstaged_s3_store.name)
    assert backend.fs.find(full_path(backend, f"_schema/{djstaged_schema.database}"))  # cached by this process
    stage(Scan, volume(8), cluster)
    check_row(Scan, 8)


def test_workers_cannot_write_into_a_committed_row(Scan, store, cluster):
    """The Zarr array the workers wrote through is sealed with its block: a later compute is refused on the
    workers, and the row keeps what it committed."""
    with dj_staged.staged_insert1(Scan) as staged:
        staged.rec["scan_id"] = 1
        shape, chunks = (8, SIDE, SIDE), (4, SIDE, SIDE)
        target = zarr.open(staged.store("volume", ".zarr"), mode="w", shape=shape, chunks=chunks, dtype="uint32")
        to_zarr(volume(8), target, client=cluster)
    with pytest.raises(HandleModeError, match="sealed"):
        to_zarr(volume(8) + 1, target, client=cluster)
    check_row(Scan, 8)
