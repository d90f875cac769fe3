"""``make bench``: every row in its own process against one embedded PostgreSQL and a local store.

Environment:

- ``DJ_STAGED_BENCH_GIB``: payload of the main rows in GiB (default 1);
- ``DJ_STAGED_BENCH_SCALING_GIB``: sizes of the scaling rows (default ``1,2,4``; empty: none);
- ``DJ_STAGED_BENCH_ROUNDS``: rounds over the rows (default 3; some rows get more, DataJoint's ``insert1``
  rows one and the scaling series two, see ``bench/plan.py``); a row's wall time is its best round (the
  median is kept too), its memory the largest seen;
- ``DJ_STAGED_BENCH_ROWS``: only these row keys, comma-separated (default all); the key ``batch`` is the
  multi-row benchmark (``bench/multirow.py``, ``DJ_STAGED_BENCH_BATCH_ROWS`` rows, default 10000), run last;
- ``DJ_STAGED_BENCH_DIR``: folder for the store and the baselines' files (default the system temp folder);
- ``DJ_STAGED_BENCH_OUT``: where ``results.md`` and ``results.json`` go (default ``bench/``).
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.context
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dj_staged.testing.services import embedded_postgres

from . import child
from .common import postgres_to_env
from .plan import Row, all_rows, payload_bytes
from .report import machine, write

REPO = Path(__file__).resolve().parent.parent


def wanted_keys() -> list[str]:
    """The row keys asked for with ``DJ_STAGED_BENCH_ROWS`` (empty: all)."""
    return [k.strip() for k in os.environ.get("DJ_STAGED_BENCH_ROWS", "").split(",") if k.strip()]


def selected_rows() -> list[Row]:
    """The rows to run, in order."""
    wanted = wanted_keys()
    rows = all_rows()
    return [row for row in rows if row.key in wanted] if wanted else rows


def run_batch() -> dict:
    """The multi-row benchmark in a fresh child process."""
    done = subprocess.run([sys.executable, "-m", "bench.multirow"], cwd=REPO, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
    return {"error": "\n".join(tail) or f"exit {done.returncode}"}


def forks() -> multiprocessing.context.ForkServerContext:
    """Children forked from one server that has imported the rows' modules once.

    A fresh interpreter per row would spend about 1.3 s importing DataJoint,
    Zarr and numpy, a tenth of the whole run; a fork of a process that has done
    only that is as fresh for the row's memory and costs milliseconds.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bench.child"])
    return context


def run_row(row: Row, nbytes: int, folder: Path, context: multiprocessing.context.ForkServerContext) -> dict:
    """Run ``row`` in a fresh child process; its figures, or the error it failed with."""
    load = os.getloadavg()[0]
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=child.report, args=(row.key, nbytes, str(folder), send))
    process.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = {"key": row.key, "payload_bytes": nbytes, "error": "the row's process died without a result"}
    process.join()
    if "error" in result:
        result["error"] = "\n".join(result["error"].strip().splitlines()[-15:]) + f" (exit {process.exitcode})"
        return result
    return {**result, "load_before": load}


def row_rounds(row: Row, rounds: int) -> int:
    """How many times ``row`` is measured in a run of ``rounds`` rounds."""
    wanted = rounds + row.extra_rounds
    return 1 if rounds == 1 else min(wanted, row.max_rounds or wanted)


def block(row: Row) -> str:
    """The baseline ``row`` is compared with (a baseline's own label): a block's rows run back to back."""
    return row.label if row.group == "baseline" else (row.baseline or "")


def schedule(rows: list[Row], rounds: int) -> list[tuple[int, Row]]:
    """``(round, row)`` in run order.

    Each round runs block after block, so a row and its baseline are measured
    minutes apart at most and their ratio can be taken round by round. Round 1
    keeps the listed order; later rounds shuffle each block (seeded) against
    position effects.
    """
    blocks = list(dict.fromkeys(block(row) for row in rows))
    plan = []
    for r in range(1, max((row_rounds(row, rounds) for row in rows), default=0) + 1):
        for name in blocks:
            order = [row for row in rows if block(row) == name and r <= row_rounds(row, rounds)]
            if r > 1:
                random.Random(f"{r}:{name}").shuffle(order)
            plan += [(r, row) for row in order]
    return plan


def combine(runs: list[dict]) -> dict:
    """One row's rounds as one result: best and median wall time, largest memory; the first error if any failed."""
    errors = [run for run in runs if "error" in run]
    if errors:
        return errors[0]
    seconds = sorted(run["seconds"] for run in runs)
    peak = max(runs, key=lambda run: run["peak_above_before_mib"])
    return {
        **peak,
        "seconds": seconds[0],
        "seconds_median": statistics.median(seconds),
        "cpu_seconds": min(run["cpu_seconds"] for run in runs),
        "seconds_rounds": [round(run["seconds"], 3) for run in runs],
        "load_before": statistics.mean(run["load_before"] for run in runs),
    }


def main() -> None:
    gib = float(os.environ.get("DJ_STAGED_BENCH_GIB", "1"))
    out = Path(os.environ.get("DJ_STAGED_BENCH_OUT", REPO / "bench"))
    rows = selected_rows()
    started = time.perf_counter()
    rounds = int(os.environ.get("DJ_STAGED_BENCH_ROUNDS", "3"))
    measured: dict[str, list[dict]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="dj-staged-bench-", dir=os.environ.get("DJ_STAGED_BENCH_DIR")) as tmp,
        embedded_postgres() as pg,
    ):
        postgres_to_env(pg)
        context = forks()
        print(f"dj-staged bench: {gib:g} GiB payload, {len(rows)} rows, files in {tmp}", flush=True)
        plan = schedule(rows, rounds)
        for i, (r, row) in enumerate(plan, start=1):
            result = run_row(row, payload_bytes(row, gib), Path(tmp) / row.key, context)
            measured.setdefault(row.key, []).append(result)
            figures = (
                f"ERROR {result['error'].splitlines()[-1]}"
                if "error" in result
                else f"{result['seconds']:8.2f} s {result['peak_above_before_mib']:8.1f} MiB above start"
            )
            elapsed = time.perf_counter() - started
            print(f"[{i:3}/{len(plan)} {elapsed:4.0f} s] round {r} {row.label:<48} {figures}", flush=True)
        batch = None
        if not wanted_keys() or "batch" in wanted_keys():
            batch = run_batch()
            print(f"batch: {batch}", flush=True)
    results = {key: combine(runs) for key, runs in measured.items()}
    meta = {**machine(), "payload_gib": gib, "rounds": rounds, "total_seconds": round(time.perf_counter() - started, 1)}
    md, js = write(rows, results, meta, out, batch)
    print(f"wrote {md} and {js} in {meta['total_seconds']:.0f} s", flush=True)
    if any("error" in r for r in results.values()) or (batch is not None and "error" in batch):
        raise SystemExit("some rows failed; see the report")


if __name__ == "__main__":
    main()
