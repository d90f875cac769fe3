"""What a staged insert costs on top of the bytes it writes, with the disk out of the way.

Run: ``.venv/bin/python -m bench.overhead [--rows KEY,KEY,...] [--mib 256] [--reps 15] [--dir /dev/shm]``.

``make bench``'s rows (by key; the first is the baseline, by default the plain
write against DataJoint's own staged insert of an ``<object@>`` file and our
staged ``<object@>`` and ``<npy@>``) write the same bytes, in turn, in one
process, into a memory-backed folder and without an fsync, so that the page
faults and disk stalls that dominate ``make bench``'s sub-second rows on a
shared VM do not enter. What is left over the baseline is each insert's fixed
cost (the heading, the lease, the row's insert) and whatever it costs per byte.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from dj_staged.testing.services import embedded_postgres

from .common import MIB, Context, postgres_to_env
from .plan import find

DEFAULT_ROWS = "plain_write,dj_staged_object,object_file,npy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=DEFAULT_ROWS, help="row keys of make bench; the first is the baseline")
    parser.add_argument("--mib", type=int, default=256, help="payload per insert (MiB, a multiple of 4)")
    parser.add_argument("--reps", type=int, default=15, help="inserts per row, taken in turn")
    parser.add_argument("--dir", default="/dev/shm", help="a memory-backed folder")
    args = parser.parse_args()
    rows = [find(key.strip()) for key in args.rows.split(",")]
    seconds: dict[str, list[float]] = {row.label: [] for row in rows}
    with embedded_postgres() as pg, tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        postgres_to_env(pg)
        for rep in range(args.reps):
            for i, row in enumerate(rows):
                ctx = Context(nbytes=args.mib * MIB, folder=Path(tmp) / f"{rep}-{i}")
                ctx.make_folders()
                work = row.setup(ctx)
                start = time.perf_counter()
                work()
                seconds[row.label].append(time.perf_counter() - start)
                ctx.remove()
    base = statistics.median(seconds[rows[0].label])
    print(f"{args.mib} MiB per insert, {args.reps} inserts per row, in {args.dir}; baseline: {rows[0].label}")
    for label, values in seconds.items():
        median = statistics.median(values)
        extra = f"  {(median - base) * 1000:+6.1f} ms, {median / base:.2f} ×" if label != rows[0].label else ""
        print(f"{label:<48} median {median * 1000:7.1f} ms  best {min(values) * 1000:7.1f} ms{extra}")


if __name__ == "__main__":
    main()
