"""``dj-staged status``: the staged writes in flight, from the leases in the stores."""

from __future__ import annotations

import argparse
import json
from types import ModuleType

from .common import check_listable, connect, stores_to_use

DESCRIPTION = (
    "Show the staged writes in flight, one line per field of each row being written: schema, table, field, "
    "primary key, host, process id, when it started, its last update, the bytes staged so far, and whether "
    "it is live (its writer holds its lease) or abandoned (its writer was interrupted, or is gone). Then the jobs of "
    "populate(reserve_jobs=True) that abandoned writes left reserved or in error, with the call that releases them. "
    "Read from the leases in each store, one listing per store."
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add ``status`` to the ``dj-staged`` commands."""
    status = commands.add_parser(
        "status", parents=[common], help="show the staged writes in flight", description=DESCRIPTION
    )
    status.add_argument("--store", action="append", help="store to look at (repeatable; default: every store)")
    status.add_argument(
        "--schema",
        action="append",
        help="schema to show (repeatable; default: every schema the connection can list that has leases)",
    )
    status.add_argument("--json", action="store_true", help="print as JSON (times in ISO 8601, sizes in bytes)")
    status.set_defaults(run=run)


def run(args: argparse.Namespace, dj: ModuleType) -> int:
    """Print what is in flight; exit status 0."""
    from ..status import in_flight

    connection = connect(dj)
    stores = stores_to_use(dj, args.store)
    if args.schema:
        check_listable(args.schema, set(dj.list_schemas(connection=connection)))
    found = in_flight(connection, stores=stores, schemas=args.schema, config=dj.config)
    print(json.dumps(found.as_dict(), indent=2) if args.json else found.format())
    return 0
