"""Dask into a staged field: ``dask.array.to_zarr`` in parallel, and nothing still writing when it fails.

Install ``dj-staged[dask]``. Inside a staged block::

    import dask.array as da
    from dj_staged.dask import to_zarr

    volume = da.map_blocks(reconstruct, ...)        # lazy: nothing computed yet
    with dj_staged.staged_insert1(Scan) as staged:
        staged.rec["scan_id"] = 1
        to_zarr(volume, staged.store("volume", ".zarr"))  # the threads of this process, or a Client's workers
    # the row is inserted when the block ends, after every chunk is written

:func:`to_zarr` is ``dask.array.to_zarr(array, target, compute=False)``
computed so that it returns, or raises, only once no task is running any
more. ``dask.array.to_zarr`` itself raises as soon as one task fails while
other tasks are still writing chunks: a staged block that unwinds then would
remove the array before their chunks land, and leave them in the store. Here a
failure in one task lets the running ones finish (threads) or every task end
(a distributed cluster, where a running task cannot be stopped), and then the
first error is raised, so the block unwinds over a store nothing writes to.

The handle goes to the workers by pickling: on a local store it is an FSMap
whose journaling filesystem pickles as the store's plain one; on S3 it is
s3fs's FSMap. dj-staged's core never imports this module, nor Dask.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

import dask
import dask.array as da

if TYPE_CHECKING:
    import fsspec
    import zarr
    from distributed import Client


def default_client() -> Client | None:
    """The distributed ``Client`` Dask would compute with now, or None (threads, or distributed not installed)."""
    if dask.config.get("scheduler", None) != "dask.distributed":
        return None
    try:
        from distributed import default_client as current
    except ImportError:  # pragma: no cover - the scheduler setting names distributed only when it is installed
        return None
    try:
        return cast("Client", current())  # distributed's default_client() is unannotated
    except ValueError:
        return None


def to_zarr(
    array: da.Array,
    target: fsspec.FSMap | zarr.Array[Any],
    *,
    client: Client | None = None,
    num_workers: int | None = None,
    **zarr_array_kwargs: object,
) -> None:
    """Write ``array`` into ``target`` (``staged.store(field, ".zarr")``, or a ``zarr.Array``) in parallel.

    Computed on ``client`` (a ``distributed.Client``; by default the one Dask
    would use), or else by ``num_workers`` threads of this process (default:
    the CPU count). Into a store, each Dask chunk becomes one Zarr chunk,
    written by the task that computes it; nothing is gathered to the caller.
    ``zarr_array_kwargs`` go to ``dask.array.to_zarr`` (for example
    ``compressors=...``). Returns when every chunk is written; if a task fails,
    raises its error once no task is running.
    """
    stored = da.to_zarr(array, target, compute=False, **zarr_array_kwargs)
    client = client if client is not None else default_client()
    if client is not None:
        from distributed import as_completed, futures_of

        futures = futures_of(client.persist(stored))
        # Every task to its end, failed or not: one that is running cannot be stopped, only forgotten.
        ended = list(as_completed(futures, loop=client.loop))
        failed = [future for future in ended if future.status != "finished"]
        if failed:
            failed[0].result()  # raises that task's error
        return
    workers = num_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:  # on an error, leaving the block waits for the running tasks
        dask.compute(stored, scheduler="threads", pool=pool)
