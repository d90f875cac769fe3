"""``PYTHONPATH=tests python -m soak``: a soak with its own services; prints the figures, exits 0 if nothing was
lost or left (``make soak`` runs the long one; ``--help`` lists the options)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import soak
from soak.config import SoakConfig
from soak.orchestrator import run_soak
from soak.services import own_services


def parse_args(argv: list[str] | None = None) -> tuple[SoakConfig, bool]:
    parser = argparse.ArgumentParser(prog="python -m soak", description=soak.__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="writer operations in all (default 2000)")
    parser.add_argument(
        "--stores", default="local,s3", help="comma-separated: local, s3, gcs, azure (default local,s3)"
    )
    parser.add_argument("--writers", type=int, default=3, help="writer processes (default 3)")
    parser.add_argument("--deleters", type=int, default=1, help="deleter processes (default 1)")
    parser.add_argument("--collectors", type=int, default=2, help="collector processes (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--keys", type=int, default=0, help="primary keys per table (default ops/4, at least 24)")
    parser.add_argument("--kill-every", type=int, default=40, help="orchestrator kills about every N ops (0: never)")
    parser.add_argument("--big-every", type=int, default=50, help="every Nth key has a 17 MiB <blob@s3> (0: none)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = parser.parse_args(argv)
    config = SoakConfig(
        ops=args.ops,
        stores=tuple(s.strip() for s in args.stores.split(",") if s.strip()),
        writers=args.writers,
        deleters=args.deleters,
        collectors=args.collectors,
        seed=args.seed,
        keys=args.keys,
        kill_every=args.kill_every,
        big_every=args.big_every,
        timeout=args.timeout,
    )
    return config, args.keep


class MotoErrors(logging.Filter):
    """Counts, instead of printing, the tracebacks moto's server logs when it fails a request.

    Its in-memory bucket is not thread-safe: a listing that runs while another request deletes a key
    can fail with a ``KeyError`` (HTTP 500), which the S3 client retries. A request that still failed
    after its retries would reach the soak as an unexpected error.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Error on request"):
            self.count += 1
            return False
        return True


def main(argv: list[str] | None = None) -> int:
    """Run a soak with its own services; print the figures; 0 if nothing was lost or left."""
    config, keep = parse_args(argv)
    moto_errors = MotoErrors()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    logging.getLogger("werkzeug").addFilter(moto_errors)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    workdir = Path(tempfile.mkdtemp(prefix="dj-staged-soak-"))
    try:
        with own_services(list(config.stores), workdir) as services:
            result = run_soak(config, services)
    finally:
        if not keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    print(result.summary(config))
    if moto_errors.count:
        print(f"  moto: {moto_errors.count} requests failed inside moto's server (HTTP 500, retried by the client)")
    for title, entries in (("LOST", result.lost), ("LEFT", result.leftovers), ("ERROR", result.errors)):
        for entry in entries:
            print(f"{title}: {entry}")
    if keep:
        print(f"work folder: {workdir}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
