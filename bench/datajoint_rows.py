"""DataJoint's own paths for the same content: ``insert1`` of a value in memory, and its built-in staged insert.

The value ``insert1`` takes (an array, an attachment's file) is prepared before
the clock starts; the clock covers ``insert1`` itself, which encodes, hashes and
writes it.
"""

from __future__ import annotations

import numpy as np

from .common import ROWS, Context, Work, in_memory_array, write_chunks
from .zarrs import frame_count, frames, warm_up


def _insert(ctx: Context, field: str, value) -> Work:
    table = ctx.table()

    def work() -> None:
        table.insert1({"bench_id": 1, field: value})

    return work


def npy(ctx: Context) -> Work:
    """``insert1`` of a float64 array into ``<npy@>``."""
    return _insert(ctx, "waveform", in_memory_array(ctx.n, ctx.source))


def blob(ctx: Context) -> Work:
    """``insert1`` of the same float64 array, shaped ``(512, n)``, into ``<blob@>``."""
    array = in_memory_array(ctx.n, ctx.source).reshape((ROWS, -1), order="F")
    return _insert(ctx, "payload", array)


def attach(ctx: Context) -> Work:
    """``insert1`` of a file (written before the clock starts) into ``<attach@>``."""
    ctx.scratch.mkdir(parents=True, exist_ok=True)
    source = ctx.scratch / "payload.bin"
    with open(source, "wb") as f:
        write_chunks(f, ctx.n, ctx.source)
    return _insert(ctx, "report", str(source))


def zarr(ctx: Context) -> Work:
    """``insert1`` of the frames, stacked in memory, into ``<zarr@>``."""
    warm_up(ctx)
    n = frame_count(ctx.nbytes)
    first = next(iter(frames(1)))
    array = np.empty((n, *first.shape), dtype=first.dtype)
    for i, frame in enumerate(frames(n)):
        array[i] = frame
    return _insert(ctx, "frames", array)


def builtin_staged_object(ctx: Context) -> Work:
    """DataJoint 2.3.5's own ``Table.staged_insert1`` for ``<object@>``, one file through ``open()``.

    ``dj_staged.enable()`` is never called in the benchmark, so this is DataJoint's engine.
    """
    table = ctx.table()

    def work() -> None:
        with table.staged_insert1 as staged:
            staged.rec["bench_id"] = 1
            with staged.open("raw", ".bin") as f:
                write_chunks(f, ctx.n, ctx.source)

    return work
