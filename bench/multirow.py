"""A batch of many small rows against as many ``staged_insert1`` blocks, side by side in one process.

Run alone: ``.venv/bin/python -m bench.multirow`` (``DJ_STAGED_BENCH_ROWS``, default 10000).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from dj_staged.measure import measured
from dj_staged.testing.services import connect_datajoint, embedded_postgres, local_stores


def _setup(pg, store_root: Path):
    import datajoint as dj

    connection = connect_datajoint(pg, local_stores(store_root))
    schema = dj.Schema(f"bench_rows_{uuid.uuid4().hex[:8]}", connection=connection)

    @schema
    class Segment(dj.Manual):
        definition = """
        run : int32
        trial : int32
        ---
        signal : <npy@>
        """

    return schema, Segment


def _write(staged, run: int, trial: int, segment: np.ndarray) -> None:
    staged.rec["run"] = run
    staged.rec["trial"] = trial
    with staged.open("signal", ".npy") as f:
        np.save(f, segment, allow_pickle=False)


def measure(Segment, rows: int) -> dict:
    """Seconds and peak RSS for ``rows`` rows as one batch and as single blocks."""
    import dj_staged

    segment = np.arange(256, dtype="float32")
    with measured() as batch:
        with dj_staged.staged_insert(Segment) as staged_batch:
            for trial in range(rows):
                with staged_batch.row() as staged:
                    _write(staged, 1, trial, segment)
    with measured() as single:
        for trial in range(rows):
            with dj_staged.staged_insert1(Segment) as staged:
                _write(staged, 2, trial, segment)
    assert len(Segment()) == 2 * rows
    return {
        "rows": rows,
        "batch_seconds": batch.seconds,
        "batch_peak_mib": batch.peak_above_before / 2**20,
        "single_seconds": single.seconds,
        "single_peak_mib": single.peak_above_before / 2**20,
        "speedup": single.seconds / batch.seconds,
    }


def run(rows: int | None = None) -> dict:
    """Start PostgreSQL and a temporary store, measure, clean up."""
    rows = rows or int(os.environ.get("DJ_STAGED_BENCH_ROWS", "10000"))
    with tempfile.TemporaryDirectory(prefix="dj-staged-bench-rows-") as tmp, embedded_postgres() as pg:
        store = Path(tmp) / "store"
        store.mkdir()
        schema, Segment = _setup(pg, store)
        try:
            return measure(Segment, rows)
        finally:
            schema.drop(prompt=False)


if __name__ == "__main__":
    start = time.perf_counter()
    print(run())
    print(f"total {time.perf_counter() - start:.1f} s")
