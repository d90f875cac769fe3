"""Our rows: ``dj_staged.staged_insert1`` for every object-store codec, one field per row.

Each row stages one row of the benchmark table, writing the payload through the
handle the way a producer would (chunk by chunk, sequentially). The clock covers
the whole ``with`` block: the writes, finalization (inspection, hashing,
promotion) and the row's insert.
"""

from __future__ import annotations

from collections.abc import Callable

from numpy.lib import format as npy_format

import dj_staged

from .common import CHUNK, ROWS, SLAB, Context, Work, slabs, write_chunks
from .zarrs import frame_count, warm_up, write_frames


def _block(ctx: Context, body) -> Work:
    table = ctx.table()

    def work() -> None:
        with dj_staged.staged_insert1(table) as staged:
            staged.rec["bench_id"] = 1
            body(staged)

    return work


def _file_row(field: str, doc: str, size: bool = False) -> Callable[[Context], Work]:
    """A row writing the payload into ``field`` through ``staged.open()``, with ``size=`` when ``size``."""

    def row(ctx: Context) -> Work:
        def body(staged) -> None:
            with staged.open(field, ".bin", size=ctx.n * CHUNK if size else None) as f:
                write_chunks(f, ctx.n, ctx.source)

        return _block(ctx, body)

    row.__doc__ = doc
    return row


def _zarr_row(field: str, doc: str) -> Callable[[Context], Work]:
    """A row writing the Zarr frames into ``field`` through ``staged.store()``."""

    def row(ctx: Context) -> Work:
        warm_up(ctx)

        def body(staged) -> None:
            write_frames(staged.store(field, ".zarr"), frame_count(ctx.nbytes))

        return _block(ctx, body)

    row.__doc__ = doc
    return row


object_file = _file_row("raw", "``<object@>``, one file through ``staged.open()``.")
object_directory = _zarr_row("raw", "``<object@>``, a Zarr directory through ``staged.store()``.")
blob_bytes_sized = _file_row(
    "payload", "``<blob@>`` raw bytes with ``open(..., size=N)``: hashed while they stream (one pass).", size=True
)
blob_bytes_unsized = _file_row(
    "payload", "``<blob@>`` raw bytes of unknown length: header patched at exit, then one re-read to hash."
)
hash_ = _file_row("content", "``<hash@>``: the bytes written are the value.")
zarr = _zarr_row("frames", '``<zarr@>`` through ``staged.store(field, ".zarr")``.')


def npy(ctx: Context) -> Work:
    """``<npy@>``: a ``.npy`` header, then the float64 data chunk by chunk."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (ctx.n * CHUNK // 8,)}

    def body(staged) -> None:
        with staged.open("waveform", ".npy") as f:
            npy_format.write_array_header_2_0(f, header)
            write_chunks(f, ctx.n, ctx.source)

    return _block(ctx, body)


def blob_array(ctx: Context) -> Work:
    """``<blob@>`` of a float64 array of shape ``(512, n)``, streamed in slabs along the last axis."""
    shape = (ROWS, ctx.n * SLAB)

    def body(staged) -> None:
        with dj_staged.open_blob_array(staged, "payload", shape, "float64") as out:
            for slab in slabs(ctx.n, ctx.source):
                out.write(slab)

    return _block(ctx, body)


def attach(ctx: Context) -> Work:
    """``<attach@>`` with ``set_filename`` before ``open()`` (one pass)."""

    def body(staged) -> None:
        staged.set_filename("report", "payload.bin")
        with staged.open("report", ".bin") as f:
            write_chunks(f, ctx.n, ctx.source)

    return _block(ctx, body)
