"""A batch of many small rows against as many ``staged_insert1`` blocks, side by side in one process.

Run alone: ``.venv/bin/python -m bench.multirow`` (``DJ_STAGED_BENCH_BATCH_ROWS``, default 10000);
``make bench`` runs it after the other rows and reports it in ``results.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np

from dj_staged.measure import measured
from dj_staged.testing.services import PostgresInfo, connect_datajoint, embedded_postgres, local_stores


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


def run(rows: int | None = None, pg: PostgresInfo | None = None) -> dict:
    """Measure on ``pg`` (or a PostgreSQL started here) with a temporary store; clean up."""
    rows = rows or int(os.environ.get("DJ_STAGED_BENCH_BATCH_ROWS", "10000"))
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dj-staged-bench-rows-"))
        pg = pg or stack.enter_context(embedded_postgres())
        store = Path(tmp) / "store"
        store.mkdir()
        schema, Segment = _setup(pg, store)
        try:
            return measure(Segment, rows)
        finally:
            schema.drop(prompt=False)


def main() -> None:
    """Print one ``RESULT {json}`` line; on the run's shared PostgreSQL when ``bench.run`` started this."""
    from .common import PG_ENV, postgres_from_env

    pg = postgres_from_env() if all(name in os.environ for name in PG_ENV) else None
    print("RESULT " + json.dumps(run(pg=pg)), flush=True)


if __name__ == "__main__":
    main()
