"""The rows of the benchmark, their baselines, and the targets they are held to."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

from . import baselines, datajoint_rows, staged
from .common import GIB, Context, Work

PLAIN, MD5, ZARR = "plain write", "write + MD5", "plain zarr"
# Extra rounds, on top of the run's, for the rows whose ratio noise would otherwise decide:
# - the rows compared with a plain write take well under a second at 1 GiB, while a page-fault stall of this VM
#   (1 to 2 s of system time for a GiB of fresh page cache, at random) lands on any of them;
# - the Zarr rows spread the most of the longer rows (Zarr's thread pools on 2 shared cores).
# - the hash-addressed rows and their write + MD5 baseline do the same work, so their ratio is all noise.
FAST_EXTRA_ROUNDS = 6
ZARR_EXTRA_ROUNDS = 4
MD5_EXTRA_ROUNDS = 3
# The scaling series runs each size twice and keeps the faster: one stall would otherwise bend the line.
SCALING_ROUNDS = 2


@dataclass(frozen=True)
class Row:
    """One measurement: what runs, what it is compared with, and which targets apply."""

    key: str
    label: str
    group: str  # "baseline", "datajoint", "ours", "scaling"
    setup: Callable[[Context], Work]
    baseline: str | None = None  # label of the row its ratio is taken against
    datajoint: str | None = None  # label of DataJoint's row for the same content (speed-up)
    max_ratio: float | None = None  # target on the ratio to ``baseline``
    min_speedup: float | None = None  # target on DataJoint's time over ours
    rss_target: bool = False  # peak RSS at most 128 MiB above the RSS before the block
    gib: float | None = None  # payload for scaling rows; None: the run's payload
    extra_rounds: int = 0  # measured this many times more than the run's rounds
    max_rounds: int | None = None  # at most this many rounds (DataJoint's slow rows, the scaling series)


ROWS: list[Row] = [
    Row("plain_write", PLAIN, "baseline", baselines.plain_write, extra_rounds=FAST_EXTRA_ROUNDS),
    Row("write_md5", MD5, "baseline", baselines.write_md5, baseline=PLAIN, extra_rounds=MD5_EXTRA_ROUNDS),
    Row("plain_zarr", ZARR, "baseline", baselines.plain_zarr, baseline=PLAIN, extra_rounds=ZARR_EXTRA_ROUNDS),
    Row("dj_npy", "insert1 <npy@> (array in memory)", "datajoint", datajoint_rows.npy, baseline=PLAIN, max_rounds=1),
    Row(
        "dj_blob",
        "insert1 <blob@> (float64 array in memory)",
        "datajoint",
        datajoint_rows.blob,
        baseline=MD5,
        max_rounds=1,
    ),
    Row("dj_attach", "insert1 <attach@> (file)", "datajoint", datajoint_rows.attach, baseline=MD5, max_rounds=1),
    Row("dj_zarr", "insert1 <zarr@> (array in memory)", "datajoint", datajoint_rows.zarr, baseline=ZARR, max_rounds=1),
    Row(
        "dj_staged_object",
        "DataJoint's staged insert <object@> (file)",
        "datajoint",
        datajoint_rows.builtin_staged_object,
        baseline=PLAIN,
        extra_rounds=FAST_EXTRA_ROUNDS,
    ),
    Row(
        "object_file",
        "staged <object@> (file)",
        "ours",
        staged.object_file,
        baseline=PLAIN,
        extra_rounds=FAST_EXTRA_ROUNDS,
        datajoint="DataJoint's staged insert <object@> (file)",
        max_ratio=1.10,
        rss_target=True,
    ),
    Row(
        "object_directory",
        "staged <object@> (Zarr directory)",
        "ours",
        staged.object_directory,
        baseline=ZARR,
        max_ratio=1.10,
        rss_target=True,
        extra_rounds=ZARR_EXTRA_ROUNDS,
    ),
    Row(
        "npy",
        "staged <npy@>",
        "ours",
        staged.npy,
        baseline=PLAIN,
        extra_rounds=FAST_EXTRA_ROUNDS,
        datajoint="insert1 <npy@> (array in memory)",
        max_ratio=1.10,
        rss_target=True,
    ),
    Row(
        "blob_sized",
        "staged <blob@> bytes, open(size=N)",
        "ours",
        staged.blob_bytes_sized,
        baseline=MD5,
        extra_rounds=MD5_EXTRA_ROUNDS,
        max_ratio=1.15,
        rss_target=True,
    ),
    Row(
        "blob_unsized",
        "staged <blob@> bytes, no size (one re-read)",
        "ours",
        staged.blob_bytes_unsized,
        baseline=MD5,
        rss_target=True,
    ),
    Row(
        "blob_array",
        "staged <blob@> float64 array (streamed)",
        "ours",
        staged.blob_array,
        baseline=MD5,
        extra_rounds=MD5_EXTRA_ROUNDS,
        datajoint="insert1 <blob@> (float64 array in memory)",
        max_ratio=1.15,
        min_speedup=5.0,
        rss_target=True,
    ),
    Row(
        "attach",
        "staged <attach@> (set_filename first)",
        "ours",
        staged.attach,
        baseline=MD5,
        extra_rounds=MD5_EXTRA_ROUNDS,
        datajoint="insert1 <attach@> (file)",
        max_ratio=1.15,
        rss_target=True,
    ),
    Row(
        "hash",
        "staged <hash@>",
        "ours",
        staged.hash_,
        baseline=MD5,
        max_ratio=1.15,
        rss_target=True,
        extra_rounds=MD5_EXTRA_ROUNDS,
    ),
    Row(
        "zarr",
        "staged <zarr@>",
        "ours",
        staged.zarr,
        baseline=ZARR,
        datajoint="insert1 <zarr@> (array in memory)",
        max_ratio=1.10,
        rss_target=True,
        extra_rounds=ZARR_EXTRA_ROUNDS,
    ),
]


def scaling_sizes() -> list[float]:
    """GiB of the scaling rows (``DJ_STAGED_BENCH_SCALING_GIB``, default ``1,2,4``)."""
    raw = os.environ.get("DJ_STAGED_BENCH_SCALING_GIB", "1,2,4")
    return [float(part) for part in raw.split(",") if part.strip()]


def scaling_rows() -> list[Row]:
    """Staged ``<blob@>`` (streamed float64 array) and ``<zarr@>`` at each scaling size."""
    rows = []
    for key, label, setup in (("blob_array", "<blob@> array", staged.blob_array), ("zarr", "<zarr@>", staged.zarr)):
        for gib in scaling_sizes():
            row = Row(f"{key}@{gib:g}", f"staged {label}, {gib:g} GiB", "scaling", setup, rss_target=True, gib=gib)
            rows.append(dataclasses.replace(row, max_rounds=SCALING_ROUNDS))
    return rows


def all_rows() -> list[Row]:
    """Every row in the order they run."""
    return ROWS + scaling_rows()


def find(key: str) -> Row:
    """The row named ``key``."""
    for row in all_rows():
        if row.key == key:
            return row
    raise KeyError(key)


def payload_bytes(row: Row, default_gib: float) -> int:
    """Bytes the row writes."""
    return int((row.gib if row.gib is not None else default_gib) * GIB)
