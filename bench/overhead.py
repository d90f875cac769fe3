"""``make bench``'s rows in turn in one process: what a staged insert costs on top of the bytes it writes.

``.venv/bin/python -m bench.overhead [--rows KEY,...] [--mib 256] [--reps 15] [--dir /dev/shm] [--fsync]``. No fsync
(unless ``--fsync``), no disk stalls (memory-backed folder): what is left over the first row is each insert's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from dj_staged.measure import measured
from dj_staged.testing.services import embedded_postgres

from .plan import find
from .rows import MIB, Context


def main(argv: list[str] | None = None) -> None:
    """Run the rows in turn; print each one's median and best seconds, MiB/s, peak RSS above start, median ratio."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", default="plain_write,dj_staged_object,object_file,npy", help="the first: baseline")
    parser.add_argument("--mib", type=int, default=256, help="payload per insert (MiB, a multiple of 4)")
    parser.add_argument("--reps", type=int, default=15, help="inserts per row, taken in turn")
    parser.add_argument("--dir", default="/dev/shm", help="a memory-backed folder")
    parser.add_argument("--fsync", action="store_true", help="the baselines fsync what they write, as in make bench")
    args = parser.parse_args(argv)
    runs: dict[str, list] = {key.strip(): [] for key in args.rows.split(",")}
    with embedded_postgres() as pg, tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for rep in range(args.reps):
            for key, measurements in runs.items():
                ctx = Context(args.mib * MIB, Path(tmp) / f"{rep}-{key}", pg, fsync=args.fsync)
                find(key).set_up(ctx)
                with measured() as m:
                    find(key).work(ctx)
                measurements.append(m)
                ctx.remove()
    base = statistics.median(m.seconds for m in next(iter(runs.values())))
    print(f"{args.mib} MiB per insert, {args.reps} inserts per row, in {args.dir}")
    for key, ms in runs.items():
        median, best = statistics.median(m.seconds for m in ms), min(m.seconds for m in ms)
        above = max(m.peak_above_before for m in ms) / MIB
        print(f"{find(key).label:<46} median {median * 1000:7.1f} ms, best {best * 1000:7.1f} ms, "
              f"{args.mib / median:5.0f} MiB/s, peak RSS +{above:4.0f} MiB, {median / base:.2f} ×")  # fmt: skip


if __name__ == "__main__":
    main()
