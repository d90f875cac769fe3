"""``make bench``: every row in a fresh process, against one embedded PostgreSQL, a local store and the emulators
of S3 (moto), GCS (fake-gcs-server) and Azure (Azurite); its ``DJ_STAGED_BENCH_*`` settings: README, *Performance*."""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dj_staged.measure import measured
from dj_staged.testing import services as emulators

from .plan import Row, all_rows, find, payload_bytes, schedule
from .report import write
from .rows import MIB, Context, chunks, write_frames


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU s of process ``pid`` (all threads, /proc); else ours + our ended children's (the writers)."""
    fields = Path(f"/proc/{pid or os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    children = 0.0 if pid else sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + children


def count_s3_calls(fs: Any) -> Counter:
    """Count ``fs``'s S3 calls from now on, bytes sent and received, ListObjectsV2 calls by prefix."""
    seen: Counter = Counter()
    fs.connect()

    def on_call(model: Any, parsed: dict, **_: Any) -> None:
        seen["s3_calls"] += 1
        if model.name == "GetObject":
            seen["downloaded_bytes"] += parsed.get("ContentLength", 0)
        elif model.name == "ListObjectsV2":
            seen["list " + parsed.get("Prefix", "")] += 1

    def on_params(params: dict, model: Any, **_: Any) -> None:
        if model.name in ("PutObject", "UploadPart"):
            body = params.get("Body") or b""
            seen["uploaded_bytes"] += body.getbuffer().nbytes if hasattr(body, "getbuffer") else len(body)

    fs.s3.meta.events.register("after-call.s3", on_call)
    fs.s3.meta.events.register("provide-client-params.s3", on_params)
    return seen


def measure(row: Row, ctx: Context) -> dict:
    """Set ``row`` up, warm the page cache, time it under the RSS sampler; its figures. This VM returns idle memory to
    its host, then stalls writes into it (3 s/GiB): a payload-sized file, written and deleted unsynced, warms it."""
    if row.store:
        ctx.table(row.store)
    if row.zarr:  # Zarr's first write sets up its codecs and event loop (on S3, the mapper's)
        write_frames(ctx.objfs().get_mapper(f"{ctx.bucket}/w.zarr") if ctx.bucket else str(ctx.scratch / "w"), 2)
    ctx.value = row.prepare(ctx) if row.prepare else None
    with open(ctx.scratch / "prime.bin", "wb") as f:
        f.writelines(chunks(ctx.n + 16, ctx.source))  # and 64 MiB more
    os.unlink(f.name)
    seen = count_s3_calls(ctx.objfs()) if ctx.store == "s3" else None
    emulator = ctx.parent_pid if ctx.store == "s3" else getattr(ctx.emulators.get(ctx.store), "pid", None)
    gc.collect()
    cpu, served = cpu_seconds(), cpu_seconds(emulator) if emulator else 0.0
    with measured() as m:
        extra = (row.work(ctx) or {}) | ({"rows": ctx.batch_rows} if row.block == "rows" else {})
        if row.harness_fsync:
            ctx.sync(ctx.store_root)
    cpu = cpu_seconds() - cpu
    if emulator:
        extra |= {"emulator_cpu_share": (cpu_seconds(emulator) - served) / m.seconds}
    if seen is not None:
        lists, calls = [n for k, n in seen.items() if k.startswith("list ")], seen["s3_calls"]
        extra |= {"s3_calls": calls} | {k: seen[k] if calls else None for k in ("downloaded_bytes", "uploaded_bytes")}
        extra |= {"list_calls": sum(lists) or None, "listings_per_prefix": max(lists) if lists else None}
    peak = max(m.rss_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    figures = {"payload_bytes": ctx.nbytes, "seconds": m.seconds, "cpu_seconds": cpu, "peak_mib": peak / MIB}
    return extra | figures | {"peak_above_before_mib": (peak - m.rss_before) / MIB, "harness_fsync": row.harness_fsync}


def child(key: str, nbytes: int, folder: str, services: tuple, batch_rows: int, out: Connection) -> None:
    """A forked row: measure, clean up, send the figures or the traceback (its log lines dropped)."""
    for stream in (sys.stdout, sys.stderr):
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    try:
        ctx = Context(nbytes, Path(folder), *services, batch_rows=batch_rows)
        try:
            out.send(measure(find(key), ctx))
        finally:
            ctx.remove()
    except BaseException:
        out.send({"error": traceback.format_exc()})


def run_row(context: multiprocessing.context.ForkServerContext, row: Row, *args: Any) -> dict:
    """Run ``row`` in a fresh process forked from the server, which has imported the modules (DataJoint's, ours)."""
    receive, send, result = *context.Pipe(duplex=False), None
    process = context.Process(target=child, args=(row.key, *args, send))
    process.start()
    send.close()
    with contextlib.suppress(EOFError):
        result = receive.recv()
    process.join()
    return result or {"error": f"the row's process died without a result (exit {process.exitcode})"}


def combine(runs: list[dict]) -> dict:
    """A row's rounds as one result: best and median wall, the best round's CPU, the largest other figures."""
    if errors := [run for run in runs if "error" in run]:
        return {"error": "\n".join(errors[0]["error"].strip().splitlines()[-15:])}
    best, seconds = min(runs, key=lambda run: run["seconds"]), [run["seconds"] for run in runs]
    numbers = {k for run in runs for k, v in run.items() if type(v) in (int, float) and "seconds" not in k}
    most = {k: max(run[k] for run in runs if type(run.get(k)) in (int, float)) for k in numbers}
    return best | most | {"seconds_median": statistics.median(seconds), "seconds_rounds": seconds}


def main() -> None:
    """Run the plan, print progress, write the report; exit non-zero if a row failed."""
    env = os.environ.get
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress lines, also when piped
    gib, batch_rows = float(env("DJ_STAGED_BENCH_GIB", "1")), int(env("DJ_STAGED_BENCH_BATCH_ROWS", "10000"))
    cap = int(env("DJ_STAGED_BENCH_ROUNDS", "0")) or None
    wanted = {key.strip() for key in env("DJ_STAGED_BENCH_ROWS", "").split(",") if key.strip()}
    stores = {None, "main", *(name.strip() for name in env("DJ_STAGED_BENCH_STORES", "s3,gcs,azure").split(","))}
    rows = [row for row in all_rows() if (not wanted or row.key in wanted) and row.store in stores]
    plan, started, runs = schedule(rows, cap), time.perf_counter(), {}
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bench.plan", "zarr", "s3fs", "dj_staged.session", "dj_staged.codecs"])
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=env("DJ_STAGED_BENCH_DIR")))
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        start = {"s3": emulators.moto_s3_server, "gcs": emulators.fake_gcs_server, "azure": emulators.azurite_server}
        found = {name: stack.enter_context(start[name]()) for name in sorted({row.store for row in rows} & set(start))}
        if "gcs" in found:  # before the fork server starts: its rows' processes inherit it
            stack.enter_context(emulators.gcs_emulator_environment(found["gcs"]))
        services = (stack.enter_context(emulators.embedded_postgres()), found, os.getpid())  # moto: our threads
        print(f"dj-staged bench: {gib:g} GiB, {len(rows)} rows, {len(plan)} runs, files in {tmp}")
        for i, (n, row) in enumerate(plan, start=1):
            nbytes = payload_bytes(row, gib, batch_rows)
            result = run_row(context, row, nbytes, str(Path(tmp) / row.key), services, batch_rows)
            runs.setdefault(row.key, []).append(result)
            shown = result["error"].strip().splitlines()[-1] if "error" in result else f"{result['seconds']:8.2f} s"
            print(f"[{i:3}/{len(plan)} {time.perf_counter() - started:5.0f} s] round {n} {row.label:<48} {shown}")
    results = {key: combine(row_runs) for key, row_runs in runs.items()}
    meta = {"payload_gib": gib, "batch_rows": batch_rows, "rounds_cap": cap, "seconds": time.perf_counter() - started}
    md, js = write(rows, results, meta, Path(env("DJ_STAGED_BENCH_OUT", Path(__file__).parent)))
    print(f"wrote {md} and {js} in {meta['seconds']:.0f} s")
    if any("error" in result for result in results.values()):
        raise SystemExit("some rows failed; see the report")


if __name__ == "__main__":
    main()
