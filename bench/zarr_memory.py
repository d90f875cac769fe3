"""Stage a Zarr array several times larger than memory into ``<zarr@>``, against plain Zarr on a local folder.

Run: ``.venv/bin/python -m bench.zarr_memory`` (size in GiB from ``DJ_STAGED_ZARR_GIB``, default 4).

Both sides write the same uint16 frames, one chunk per frame, in one process
and one run: once through ``staged.store("frames", ".zarr")`` of a staged insert
on an embedded PostgreSQL and a local store in a temporary folder (the timing
includes finalization and the row insert), and once with ``zarr.open`` on a
plain local folder without DataJoint. Reported per side: seconds, MiB/s and
peak resident memory above the RSS before the block.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from dj_staged.measure import Measurement, measured
from dj_staged.testing.services import connect_datajoint, embedded_postgres, local_stores

MIB = 1 << 20
GIB = 1 << 30
FRAME = (1024, 1024)  # one chunk: 2 MiB of uint16
DTYPE = np.dtype("uint16")


def _frames(n: int) -> Any:
    """``n`` frames of incompressible-looking data without holding more than a few frames."""
    pool = np.random.default_rng(0).integers(0, 65535, size=(4, *FRAME), dtype=DTYPE)
    for i in range(n):
        yield pool[i % len(pool)] + np.uint16(i)


def _write(target: Any, n: int) -> None:
    z = zarr.open(target, mode="w", shape=(n, *FRAME), chunks=(1, *FRAME), dtype=DTYPE)
    for i, frame in enumerate(_frames(n)):
        z[i] = frame


def _stage(table: Any, session_id: int, n: int) -> None:
    import dj_staged

    with dj_staged.staged_insert1(table) as staged:
        staged.rec["session_id"] = session_id
        _write(staged.store("frames", ".zarr"), n)
        staged.rec["n_frames"] = n


def _figures(m: Measurement, nbytes: int) -> dict[str, float]:
    return {
        "seconds": round(m.seconds, 2),
        "mib_per_s": round(nbytes / MIB / m.seconds, 1),
        "peak_rss_above_start_mib": round(m.peak_above_before / MIB, 1),
        "peak_rss_mib": round(m.rss_peak / MIB, 1),
    }


def run(gib: float = 4.0) -> dict[str, Any]:
    """Stage ``gib`` GiB into ``<zarr@>`` and write the same chunks with plain Zarr; return both sides' figures."""
    import datajoint as dj

    n = max(1, int(gib * GIB) // (DTYPE.itemsize * FRAME[0] * FRAME[1]))
    nbytes = n * DTYPE.itemsize * FRAME[0] * FRAME[1]
    with tempfile.TemporaryDirectory(prefix="dj-staged-bench-zarr-") as tmp, embedded_postgres() as pg:
        store_root, plain_root = Path(tmp) / "store", Path(tmp) / "plain"
        store_root.mkdir()
        schema = dj.Schema(f"bench_{uuid.uuid4().hex[:8]}", connection=connect_datajoint(pg, local_stores(store_root)))

        @schema
        class ImagingSession(dj.Manual):
            definition = """
            session_id : int32
            ---
            n_frames : int32
            frames : <zarr@main>
            """

        _write(str(plain_root / "warmup.zarr"), 2)  # first writes set up zarr's codecs, its event loop
        _stage(ImagingSession, 0, 2)  # and DataJoint's heading, so neither side pays for them
        with measured() as plain:
            _write(str(plain_root / "frames.zarr"), n)
        shutil.rmtree(plain_root)

        with measured() as staged_m:
            _stage(ImagingSession, 1, n)

        fetched = (ImagingSession & {"session_id": 1}).fetch1("frames")
        ok = fetched.shape == (n, *FRAME) and all(np.array_equal(fetched[i], f) for i, f in enumerate(_frames(3)))
        schema.drop(prompt=False)
    return {
        "gib": round(nbytes / GIB, 3),
        "frames": n,
        "chunk": [1, *FRAME],
        "dtype": str(DTYPE),
        "plain_zarr": _figures(plain, nbytes),
        "staged_zarr": _figures(staged_m, nbytes),
        "fetched_back": ok,
    }


def main() -> None:
    gib = float(os.environ.get("DJ_STAGED_ZARR_GIB", "4"))
    result = run(gib)
    print(
        f"<zarr@> staged insert vs plain zarr: {result['gib']} GiB, {result['frames']} chunks of "
        f"{result['chunk']} {result['dtype']}, PostgreSQL (embedded), local store"
    )
    print(f"{'':<26}{'seconds':>10}{'MiB/s':>10}{'peak RSS MiB':>14}{'above start':>13}")
    for label, key in (("plain zarr, local folder", "plain_zarr"), ("staged insert <zarr@>", "staged_zarr")):
        f = result[key]
        print(
            f"{label:<26}{f['seconds']:>10.2f}{f['mib_per_s']:>10.1f}{f['peak_rss_mib']:>14.1f}"
            f"{f['peak_rss_above_start_mib']:>13.1f}"
        )
    print(f"fetched back: {'ok' if result['fetched_back'] else 'MISMATCH'}")
    if not result["fetched_back"]:
        raise SystemExit("the staged array did not fetch back as written")


if __name__ == "__main__":
    main()
