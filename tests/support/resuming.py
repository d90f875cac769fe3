"""Resumable writers run in child processes by tests/addressing/test_resume.py (spawned, so importable by name).

Each one stages row ``k = 1`` of a table ``Resumed(k -> v)`` with ``resume=True`` and stops the way a test asks:
SIGKILL once ``kill_at`` content bytes are written and the last durable unit they reach is recorded (so where
the next attempt goes on is known exactly), SIGKILL after the handle completed the object, or a pause
(SIGSTOP) at a named step while it holds the row's resume key.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from support.workers import connect

KEY = 1


def resumed_table(schema_name: str, connection: Any, definition: str) -> Any:
    """The test's ``Resumed`` table, reached through ``connection``."""
    import datajoint as dj

    schema = dj.Schema(schema_name, connection=connection, create_tables=False)
    return schema(type("Resumed", (dj.Manual,), {"definition": definition}))


class Durable:
    """Hears ``writer.checkpoint`` and waits until a given stored offset is recorded durable."""

    def __init__(self) -> None:
        self.offset = 0
        self.changed = threading.Condition()

    def __call__(self, **context: Any) -> None:
        offset = int((context["doc"].get("checkpoint") or {}).get("offset") or 0)
        with self.changed:
            self.offset = max(self.offset, offset)
            self.changed.notify_all()

    def wait_for(self, offset: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.offset >= offset, timeout=60)


def killed_writer(
    db: dict,
    stores: dict,
    schema_name: str,
    definition: str,
    ext: str,
    options: dict,
    data: bytes,
    kill_at: int | None,
    filename: str | None = None,
) -> str:
    """Write ``data[:kill_at]`` through ``open()`` and SIGKILL this process once the last durable unit those
    bytes reach (counting the stored prefix) is recorded; ``kill_at=None``: write everything, close the handle
    (the object is complete) and SIGKILL this process before the block ends. ``filename``: an ``<attach@>``
    value's, set before ``open()``."""
    import dj_staged
    from dj_staged import steps

    table = resumed_table(schema_name, connect(db, stores), definition)
    durable = Durable()
    with steps.observe("writer.checkpoint", durable), dj_staged.staged_insert1(table, resume=True) as staged:
        staged.rec["k"] = KEY
        if filename is not None:
            staged.set_filename("v", filename)
        f = staged.open("v", ext, **options)
        if f.tell() != 0:
            return f"a first attempt began at {f.tell()}"
        if kill_at is None:
            f.write(data)
            f.close()
            os.kill(os.getpid(), signal.SIGKILL)
        f.write(data[:kill_at])
        stored = f.content_offset + kill_at
        boundary = stored - stored % f.unit
        if boundary and not durable.wait_for(boundary):
            return f"no checkpoint at {boundary} (last: {durable.offset})"
        os.kill(os.getpid(), signal.SIGKILL)
    return "not killed"


def holding_writer(
    db: dict, stores: dict, schema_name: str, definition: str, ext: str, data: bytes, step: str | None = None
) -> int:
    """Resume row ``k = 1``, writing ``data``; pause (SIGSTOP, label ``step``) at ``step``, or, without one, once
    the handle is open (label ``holding``); after SIGCONT finish the row. Returns where the handle began."""
    import dj_staged
    from dj_staged import steps
    from support.child import pause_here

    table = resumed_table(schema_name, connect(db, stores), definition)
    with contextlib.ExitStack() as stack:
        if step is not None:
            stack.enter_context(steps.observe(step, lambda **context: pause_here(step)))
        with dj_staged.staged_insert1(table, resume=True) as staged:
            staged.rec["k"] = KEY
            with staged.open("v", ext) as f:
                began = f.tell()
                if step is None:
                    pause_here("holding")
                f.write(data[began:])
    return began


def killed_zarr_writer(
    db: dict, stores: dict, schema_name: str, definition: str, frames: Any, upto: int, create: bool = False
) -> str:
    """Write frames ``0..upto-1`` of ``frames`` as a Zarr array through a resumable ``store()`` handle of the table
    ``Movie`` (``create``: ``dj_staged.create_zarr_array``, for ``<zarr@>``), then SIGKILL this process before the
    block ends."""
    import datajoint as dj
    import zarr

    import dj_staged

    schema = dj.Schema(schema_name, connection=connect(db, stores), create_tables=False)
    table = schema(type("Movie", (dj.Manual,), {"definition": definition}))
    with dj_staged.staged_insert1(table, resume=True) as staged:
        staged.rec["k"] = KEY
        chunks = (1, *frames.shape[1:])
        if create:
            z = dj_staged.create_zarr_array(staged, "frames", shape=frames.shape, chunks=chunks, dtype=frames.dtype)
        else:
            z = zarr.open(
                staged.store("frames", ".zarr"), mode="w", shape=frames.shape, chunks=chunks, dtype=frames.dtype
            )
        for i in range(upto):
            z[i] = frames[i]
        os.kill(os.getpid(), signal.SIGKILL)
    return "not killed"


def killed_populate(
    db: dict, stores: dict, schema_name: str, source: str, derived: str, data: bytes, kill_at: int, reserve_jobs: bool
) -> str:
    """``Derived.populate()`` of tables ``Source`` and ``Derived`` (declared by the test), whose ``make()`` writes
    ``data[:kill_at]`` to ``v`` with ``resume=True`` and SIGKILLs this process once the last durable unit those
    bytes reach is recorded."""
    import datajoint as dj

    import dj_staged
    from dj_staged import steps

    schema = dj.Schema(schema_name, connection=connect(db, stores), create_tables=False)
    Source = schema(type("Source", (dj.Manual,), {"definition": source}))  # noqa: N806, F841 - "-> Source"
    durable = Durable()

    def make(self: Any, key: dict) -> None:
        with dj_staged.staged_insert1(self, resume=True) as staged:
            staged.rec.update(key)
            with staged.open("v", ".bin") as f:
                if f.tell() != 0:
                    raise RuntimeError(f"a first attempt began at {f.tell()}")
                f.write(data[:kill_at])
                boundary = kill_at - kill_at % f.unit
                if not durable.wait_for(boundary):
                    raise RuntimeError(f"no checkpoint at {boundary} (last: {durable.offset})")
                os.kill(os.getpid(), signal.SIGKILL)

    table = schema(type("Derived", (dj.Computed,), {"definition": derived, "make": make}))
    with steps.observe("writer.checkpoint", durable):
        table.populate({"k": KEY}, reserve_jobs=reserve_jobs)
    return "not killed"
