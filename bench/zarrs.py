"""The Zarr payload, shared with :mod:`bench.zarr_memory`: uint16 frames of 1024 × 1024, one chunk each."""

from __future__ import annotations

from typing import Any

from .common import Context
from .zarr_memory import DTYPE, FRAME, _frames, _write

FRAME_BYTES = DTYPE.itemsize * FRAME[0] * FRAME[1]


def frame_count(nbytes: int) -> int:
    """Frames in a payload of about ``nbytes``."""
    return max(1, nbytes // FRAME_BYTES)


def write_frames(target: Any, n: int) -> None:
    """Create a Zarr array of ``n`` frames at ``target`` (a path or a mapping) and write them one by one."""
    _write(target, n)


def frames(n: int) -> Any:
    """The ``n`` frames :func:`write_frames` writes, as a generator."""
    return _frames(n)


def warm_up(ctx: Context) -> None:
    """Zarr's first write sets up its codecs and event loop: do it before the clock starts."""
    ctx.scratch.mkdir(parents=True, exist_ok=True)
    _write(str(ctx.scratch / "warmup.zarr"), 2)
