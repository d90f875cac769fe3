"""The ``dj-staged`` command: ``gc`` (what no row needs) and ``status`` (the staged writes in flight).

Connection and stores come from DataJoint's own configuration (``datajoint.json``
found from the current directory upwards, ``DJ_*`` environment variables, or
``--config FILE``). DataJoint is imported only once the arguments are parsed,
so ``dj-staged --help`` runs without it.

Example::

    dj-staged status                                     # every configured store
    dj-staged gc --all-schemas                           # dry run: every store, 24 h grace
    dj-staged gc --schema lab_ephys --store raw --grace 2d --delete
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import gc, status
from .common import CommandError, common_options, parse_duration, run_command

__all__ = ["build_parser", "main", "parse_duration"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``dj-staged`` and its commands."""
    parser = argparse.ArgumentParser(
        prog="dj-staged",
        description="dj-staged maintenance commands",
        parents=[common_options(suppress=False)],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{gc,status}")
    gc.add_parser(commands, common_options(suppress=True))
    status.add_parser(commands, common_options(suppress=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dj-staged`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except CommandError as error:
        print(f"dj-staged {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
