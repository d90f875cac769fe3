"""The ``dj-staged`` command: ``dj-staged gc`` reports (and with ``--delete`` removes) what no row needs.

Connection and stores come from DataJoint's own configuration (``datajoint.json``
found from the current directory upwards, ``DJ_*`` environment variables, or
``--config FILE``).

Example::

    dj-staged gc --schema lab_ephys                      # dry run: every store, 24 h grace
    dj-staged gc --schema lab_ephys --store raw --grace 2d --delete
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from datetime import timedelta

from datajoint.errors import DataJointError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"24h"``, ``"2d"``, ``"1w"`` or plain seconds (``"0"``) as a timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 30m, 24h, 2d, 1w or seconds)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dj-staged", description="dj-staged maintenance commands")
    commands = parser.add_subparsers(dest="command", required=True)
    gc = commands.add_parser(
        "gc",
        help="collect what staged inserts (and deleted rows) left in object storage",
        description=(
            "Report objects no row references and no staged insert still writes: DataJoint's _schema/ and _hash/ "
            "orphans and dj-staged's _staging/ leftovers and expired leases. Objects younger than the grace period "
            "or covered by a live lease are never deleted. Dry run unless --delete."
        ),
    )
    gc.add_argument("--schema", action="append", required=True, help="schema to collect (repeatable)")
    gc.add_argument("--store", action="append", help="store to collect (repeatable; default: every configured store)")
    gc.add_argument("--grace", type=parse_duration, default=timedelta(hours=24), help="minimum age (default 24h)")
    gc.add_argument("--delete", action="store_true", help="delete what is reported (default: dry run)")
    gc.add_argument("--staging-only", action="store_true", help="only _staging/ and leases, not DataJoint's sections")
    gc.add_argument("--json", action="store_true", help="print the report as JSON")
    gc.add_argument("--config", help="a datajoint.json to load first")
    return parser


def configured_stores(stores: dict) -> list[str]:
    """Names of the stores in ``dj.config.stores`` (the ``default`` pointers are not stores)."""
    return sorted(name for name, spec in stores.items() if isinstance(spec, dict))


def logs_to_stderr() -> None:
    """Keep stdout for the report: DataJoint logs (``connected to ...``) to stdout by default."""
    for handler in logging.getLogger("datajoint").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def run_gc(args: argparse.Namespace) -> int:
    import datajoint as dj

    from .gc import collect

    logs_to_stderr()
    if args.config:
        dj.config.load(args.config)
    connection = dj.conn()
    schemas = []
    for name in args.schema:
        schema = dj.Schema(name, connection=connection, create_schema=False, create_tables=False)
        if not schema.exists:
            raise DataJointError(f"Schema '{name}' does not exist")
        schemas.append(schema)
    stores = args.store or configured_stores(dict(dj.config.stores))
    if not stores:
        raise DataJointError("No stores are configured; nothing to collect")
    failed = False
    for store in stores:
        report = collect(
            *schemas, store=store, grace=args.grace, dry_run=not args.delete, datajoint=not args.staging_only
        )
        failed = failed or bool(report.errors)
        print(json.dumps(report.as_dict(), indent=2) if args.json else report.format())
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dj-staged`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run_gc(args)
    except DataJointError as error:
        print(f"dj-staged {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
