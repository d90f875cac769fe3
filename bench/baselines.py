"""The hardware baselines: a plain file write, the same with MD5 in the same pass, plain Zarr on a folder.

No DataJoint and no database: what the disk, the CPU and Zarr cost on their own
for the bytes every other row writes. The harness fsyncs what was written
before it stops the clock (for every row alike).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from .common import Context, Work, chunks, write_chunks
from .zarrs import frame_count, warm_up, write_frames


def plain_write(ctx: Context) -> Work:
    """Write the payload to one local file."""
    ctx.plain_root.mkdir(parents=True, exist_ok=True)

    def work() -> None:
        with open(ctx.plain_root / "payload.bin", "wb") as f:
            write_chunks(f, ctx.n, ctx.source)

    return work


def write_md5(ctx: Context) -> Work:
    """Write the payload to one local file while computing its MD5 in the same pass."""
    ctx.plain_root.mkdir(parents=True, exist_ok=True)

    def work() -> None:
        md5 = hashlib.md5()
        with open(ctx.plain_root / "payload.bin", "wb") as f:
            for chunk in _views(ctx):
                md5.update(chunk)
                f.write(chunk)
        md5.hexdigest()

    return work


def plain_zarr(ctx: Context) -> Work:
    """Zarr writing the frames to a plain local folder."""
    warm_up(ctx)

    def work() -> None:
        write_frames(str(ctx.plain_root / "frames.zarr"), frame_count(ctx.nbytes))

    return work


def _views(ctx: Context) -> Iterator[memoryview]:
    for chunk in chunks(ctx.n, ctx.source):
        yield memoryview(chunk).cast("B")
