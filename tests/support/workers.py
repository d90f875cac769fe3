"""Functions run in separate processes by the concurrency tests (spawned, so importable by name)."""

from __future__ import annotations

from typing import Any

import numpy as np


def connect(db: dict, stores: dict) -> Any:
    from dj_staged.testing.services import PostgresInfo, connect_datajoint

    return connect_datajoint(PostgresInfo(**db), stores)


def table(schema_name: str, connection: Any) -> Any:
    import datajoint as dj

    schema = dj.Schema(schema_name, connection=connection)

    @schema
    class Shared(dj.Manual):
        definition = """
        k : int32
        ---
        v : <blob@main>
        """

    return Shared


def stage(db: dict, stores: dict, schema_name: str, key: int, data: bytes, barrier: Any) -> str:
    """Stage ``data`` under ``key`` once every worker is ready; report 'ok' or the error's class."""
    import dj_staged

    Shared = table(schema_name, connect(db, stores))
    try:
        with dj_staged.staged_insert1(Shared) as staged:
            staged.rec["k"] = key
            with staged.open("v", ".bin") as f:
                half = len(data) // 2
                f.write(data[:half])
                barrier.wait(timeout=60)
                f.write(data[half:])
    except Exception as error:
        return type(error).__name__
    return "ok"


def insert(db: dict, stores: dict, schema_name: str, key: int, data: bytes, barrier: Any) -> str:
    """Ordinary insert1 of ``data`` under ``key`` once every worker is ready."""
    Shared = table(schema_name, connect(db, stores))
    barrier.wait(timeout=60)
    Shared.insert1({"k": key, "v": data})
    return "ok"


def paused_writer(db: dict, stores: dict, schema_name: str, parts: int, store: str = "main") -> list[str]:
    """Stage ``parts`` files through a ``store()`` handle, stopping the process (SIGSTOP) halfway."""
    import datajoint as dj

    import dj_staged
    from support.child import pause_here

    schema = dj.Schema(schema_name, connection=connect(db, stores), create_tables=False)
    Table = schema(type("Paused", (dj.Manual,), {"definition": f"k : int32\n---\nraw : <object@{store}>"}))
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        fsmap = staged.store("raw", ".parts")
        for i in range(parts):
            if i == parts // 2:
                pause_here("midway")
            fsmap[f"part{i:03d}"] = part(i)
    return sorted(fsmap)


def part(i: int) -> bytes:
    """The bytes of part ``i`` of a paused writer's directory."""
    return f"part {i} ".encode() * 100


def dedup_writer(db: dict, stores: dict, schema_name: str, data: bytes, store: str = "main") -> str:
    """Stage ``data`` into a ``<hash@>`` field, stopping the process at the protocol's ``writer.dedup`` step."""
    import datajoint as dj

    import dj_staged
    from dj_staged import steps
    from support.child import pause_here

    schema = dj.Schema(schema_name, connection=connect(db, stores), create_tables=False)
    Table = schema(type("Content", (dj.Manual,), {"definition": f"k : int32\n---\nv : <hash@{store}>"}))
    with steps.observe("writer.dedup", lambda **context: pause_here("dedup")):
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["k"] = 2
            with staged.open("v", ".bin") as f:
                f.write(data)
    return "ok"


def frames_block(block_info: dict | None = None, fail_at: int | None = None) -> Any:
    """One block of the test volume: frame ``i`` holds ``arange(i * plane, (i + 1) * plane)``.

    For ``dask.array.map_blocks`` (Dask pickles it by name, so it lives here, importable by workers).
    Raises for the block at ``fail_at`` along the first axis.
    """
    import numpy as np

    info = block_info[None]
    if info["chunk-location"][0] == fail_at:
        raise RuntimeError(f"reconstruction failed in block {fail_at}")
    (first, last), *_ = info["array-location"]
    shape = info["chunk-shape"]
    plane = int(np.prod(shape[1:]))
    return np.arange(first * plane, last * plane, dtype=info["dtype"]).reshape(shape)


def populate_pipeline(schema_name: str, connection: Any) -> tuple[Any, Any]:
    """``Source(source_id -> frames)`` and ``Volume`` computed from it, whose ``make`` stages a Zarr array.

    Each ``make`` writes its volume with Dask threads into ``staged.store()``. The first ``make`` of a
    process waits at ``BARRIER`` (set by :func:`populate_worker`), so every worker stages a row.
    """
    import datajoint as dj

    import dj_staged
    from dj_staged.dask import to_zarr

    schema = dj.Schema(schema_name, connection=connection)

    @schema
    class Source(dj.Manual):
        definition = """
        source_id : int32
        ---
        frames : int32
        """

    @schema
    class Volume(dj.Computed):
        definition = """
        -> Source
        ---
        volume : <zarr@main>
        """

        def make(self, key: dict) -> None:
            import dask.array as da
            import numpy as np

            frames = (Source & key).fetch1("frames")
            chunks = ((4,) * (frames // 4), (64,), (64,))
            volume = da.map_blocks(frames_block, chunks=chunks, dtype="uint32", meta=np.empty((0, 0, 0), "uint32"))
            with dj_staged.staged_insert1(self) as staged:
                staged.rec.update(key)
                to_zarr(volume + key["source_id"], staged.store("volume", ".zarr"), num_workers=2)
            MADE.append(key["source_id"])
            if len(MADE) == 1 and BARRIER is not None:
                BARRIER.wait(timeout=60)  # every worker holds a job before any goes on

    return Source, Volume


MADE: list[int] = []
BARRIER: Any = None


def populate_worker(db: dict, stores: dict, schema_name: str, barrier: Any) -> tuple[list[int], list]:
    """Run ``Volume.populate(reserve_jobs=True)``; return the keys this process made and the errors it reported."""
    import traceback

    global BARRIER
    BARRIER = barrier
    try:
        _, Volume = populate_pipeline(schema_name, connect(db, stores))
        result = Volume.populate(reserve_jobs=True)
    except BaseException:
        barrier.abort()  # the others stop waiting for this process
        return list(MADE), [traceback.format_exc()]
    return list(MADE), [str(error) for error in result["error_list"]]


#: The lease matrix's row (tests/protocol/test_lease_matrix.py), written by the test and by its killed child
FRAMES = np.arange(4 * 8, dtype="uint16").reshape(4, 8)
SHARED = b"content that an earlier row holds " * 200


def fresh(key: int) -> bytes:
    return f"new content of row {key} ".encode() * 200


def write_row(staged, key: int) -> None:
    """Row ``key``: a Zarr directory, new hash-addressed content, content row 0 already holds, and a file placed
    at a path the writer chose."""
    import zarr

    staged.rec["item_id"] = key
    z = zarr.open(staged.store("frames", ".zarr"), mode="w", shape=FRAMES.shape, chunks=(2, 8), dtype="uint16")
    z[:] = FRAMES + key
    with staged.open("fresh", ".bin") as f:
        f.write(fresh(key))
    with staged.open("shared", ".bin") as f:
        f.write(SHARED)
    with staged.open("placed", path=f"acquisition/row{key}/data.bin") as f:
        f.write(fresh(key)[::-1])


def matrix_writer(db: dict, stores: dict, schema_name: str, definition: str, step: str, key: int) -> str:
    """Stage row ``key`` of the lease matrix's table (tests/protocol/test_lease_matrix.py) and SIGKILL this
    process at the first ``step`` of the protocol."""
    import os
    import signal

    import datajoint as dj

    import dj_staged
    from dj_staged import steps

    schema = dj.Schema(schema_name, connection=connect(db, stores), create_tables=False)
    Table = schema(type("Item", (dj.Manual,), {"definition": definition}))
    with steps.observe(step, lambda **context: os.kill(os.getpid(), signal.SIGKILL)):
        with dj_staged.staged_insert1(Table) as staged:
            write_row(staged, key)
    return "not killed"


def write_through(payload: bytes, name: str, value: bytes) -> str:
    """Unpickle a ``store()`` handle (as a Dask worker would) and write ``value`` at ``name`` through it;
    'ok', or the class name of the error it raised."""
    import pickle

    handle = pickle.loads(payload)
    try:
        handle[name] = value
    except Exception as error:
        return type(error).__name__
    return "ok"


def placing_writer(
    db: dict, stores: dict, schema_name: str, definition: str, key: int, path: str, data: bytes, step: str, how: str
) -> str:
    """Stage ``data`` at the chosen ``path`` (a ``<filepath@>`` field ``placed``) under ``key``; at ``step``,
    pause (SIGSTOP, label ``step``) or SIGKILL this process (``how``)."""
    import os
    import signal

    import datajoint as dj

    import dj_staged
    from dj_staged import steps
    from support.child import pause_here

    schema = dj.Schema(schema_name, connection=connect(db, stores), create_tables=False)
    Table = schema(type("Placed", (dj.Manual,), {"definition": definition}))

    def stop(**context: Any) -> None:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        pause_here(step)

    with steps.observe(step, stop), dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = key
        with staged.open("placed", path=path) as f:
            f.write(data)
    return "committed"
