"""One row in a fresh process, forked by ``bench.run``: :func:`report` sends its figures back through a pipe.

A fresh process per row makes its peak RSS its own. The clock and the RSS
sampler (:func:`dj_staged.measure.measured`) cover the row's work and an fsync
of everything it wrote; the OS's own peak (``ru_maxrss``) is reported too.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from dj_staged.measure import measured

from .common import CHUNK, MIB, Context, durable, write_chunks
from .plan import find

PRIME_MARGIN = 64 * MIB


def prime_page_cache(ctx: Context) -> None:
    """Write the payload's size to a scratch file and delete it unsynced, just before the clock starts.

    This machine is a VM that hands memory it has not touched for a few seconds
    back to the host; the next write into that memory then costs about 3 s per
    GiB in page faults, whichever row happens to do it. Writing and deleting a
    file of the payload's size (its dirty pages are dropped, nothing reaches the
    disk) gives every row the same warm page cache.
    """
    ctx.scratch.mkdir(parents=True, exist_ok=True)
    path = ctx.scratch / "prime.bin"
    with open(path, "wb") as f:
        write_chunks(f, ctx.n + PRIME_MARGIN // CHUNK, ctx.source)
    path.unlink()


def measure(key: str, nbytes: int, folder: Path) -> dict:
    """Set the row up, run it once under the clock, clean up; return its figures."""
    row = find(key)
    ctx = Context(nbytes=nbytes, folder=folder)
    ctx.make_folders()
    try:
        work = row.setup(ctx)
        prime_page_cache(ctx)
        gc.collect()
        cpu_before = _cpu_seconds()
        with measured() as m:
            work()
            durable(ctx.store_root)
            durable(ctx.plain_root)
        cpu = _cpu_seconds() - cpu_before
        os_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = max(m.rss_peak, os_peak)
        written = sum(
            p.stat().st_size for root in (ctx.store_root, ctx.plain_root) for p in root.rglob("*") if p.is_file()
        )
    finally:
        ctx.remove()
    return {
        "key": key,
        "payload_bytes": nbytes,
        "written_bytes": written,
        "seconds": m.seconds,
        "cpu_seconds": cpu,
        "rss_before_mib": m.rss_before / MIB,
        "rss_peak_sampled_mib": m.rss_peak / MIB,
        "ru_maxrss_mib": os_peak / MIB,
        "peak_above_before_mib": (peak - m.rss_before) / MIB,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report(key: str, nbytes: int, folder: str, out: Connection) -> None:
    """Measure the row and send its figures (or the error's traceback) through ``out``: a forked child's entry.

    The row's own output (DataJoint's log lines) is dropped so that the run's
    progress lines stay readable; an error comes back as its traceback.
    """
    silent = os.open(os.devnull, os.O_WRONLY)
    os.dup2(silent, sys.stdout.fileno())
    os.dup2(silent, sys.stderr.fileno())
    try:
        out.send(measure(key, nbytes, Path(folder)))
    except BaseException:
        out.send({"key": key, "payload_bytes": nbytes, "error": traceback.format_exc()})
    finally:
        out.close()
