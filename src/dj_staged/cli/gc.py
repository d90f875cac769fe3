"""``dj-staged gc``: report (and with ``--delete`` remove) what no row references and no staged write needs."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from types import ModuleType
from typing import TYPE_CHECKING

from .common import connect, parse_duration, schemas_named, stores_to_use

if TYPE_CHECKING:
    from .._datajoint import Connection, Schema
    from ..gc import Report
    from ..stores import StagedStore

DESCRIPTION = (
    "Report objects no row references and no staged insert still writes: DataJoint's _schema/ and _hash/ "
    "orphans, and what abandoned staged writes left (interrupted, or whose writer is gone) with their leases. "
    "Objects younger than the grace period or covered by a live lease are never deleted. Dry run unless --delete."
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add ``gc`` to the ``dj-staged`` commands."""
    gc = commands.add_parser(
        "gc",
        parents=[common],
        help="collect what staged inserts (and deleted rows) left in object storage",
        description=DESCRIPTION,
    )
    which = gc.add_mutually_exclusive_group(required=True)
    which.add_argument("--schema", action="append", help="schema to collect (repeatable)")
    which.add_argument(
        "--all-schemas",
        action="store_true",
        help="every schema the connection can list that has objects in the store",
    )
    gc.add_argument("--store", action="append", help="store to collect (repeatable; default: every configured store)")
    gc.add_argument("--grace", type=parse_duration, default=timedelta(hours=24), help="minimum age (default 24h)")
    gc.add_argument(
        "--resume-window",
        type=parse_duration,
        default=None,
        help="keep an interrupted resume=True write this long after its last durable byte "
        "(default: DJ_STAGED_RESUME_WINDOW, else the grace period)",
    )
    gc.add_argument(
        "--abandon",
        action="append",
        metavar="LEASE_ID",
        help="drop an interrupted resume=True write on purpose (its lease id, as `dj-staged status` shows it): no "
        "attempt resumes it any more, and this collection reclaims what it names (repeatable)",
    )
    gc.add_argument("--delete", action="store_true", help="delete what is reported (default: dry run)")
    gc.add_argument(
        "--staging-only",
        action="store_true",
        help="only dj-staged's sections (_staging/ and its leases), not DataJoint's _schema/ and _hash/",
    )
    gc.add_argument("--json", action="store_true", help="print the report as JSON (sizes in bytes, every object)")
    gc.add_argument(
        "--limit", type=int, default=10, metavar="N", help="objects shown per list in the table (default 10; 0: none)"
    )
    gc.set_defaults(run=run)


def run(args: argparse.Namespace, dj: ModuleType) -> int:
    """Collect every store asked for; exit status 1 if anything could not be deleted."""
    from ..gc import Report, collect
    from ..gc.sections import survey_store
    from ..stores import resolve_store

    connection = connect(dj)
    stores = stores_to_use(dj, args.store)
    listable = set(dj.list_schemas(connection=connection))
    named = schemas_named(dj, connection, args.schema, listable) if args.schema else None
    report = Report(dry_run=not args.delete, grace=args.grace.total_seconds(), looked_at=list(stores))
    abandoned: set[str] = set()  # the --abandon leases marked
    for store in stores:
        survey = survey_store(resolve_store(store, dj.config))
        if named is not None:
            schemas = named
        else:
            found = sorted(survey.schema_names() & listable)
            if not found:
                report.notes.append(f"store {store}: no schema this connection can list has objects here")
                continue
            schemas = schemas_named(dj, connection, found, listable)
        if args.abandon:
            abandon(connection, resolve_store(store, dj.config), schemas, args.abandon, report, abandoned)
        report.merge(
            collect(
                *schemas,
                store=store,
                grace=args.grace,
                resume_window=args.resume_window,
                dry_run=not args.delete,
                datajoint=not args.staging_only,
                survey=survey,
            )
        )
    missing = sorted(set(args.abandon or []) - abandoned)
    if missing:
        report.notes.append(f"--abandon: no interrupted resumable write has lease {', '.join(missing)}")
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.format(limit=args.limit))
    return 1 if report.errors or missing else 0


def abandon(
    connection: Connection,
    store: StagedStore,
    schemas: list[Schema],
    lease_ids: list[str],
    report: Report,
    found: set[str],
) -> None:
    """``--abandon``: mark the interrupted resumable writes ``lease_ids`` abandoned in ``store``, and say so."""
    from ..leases import held_lease_keys
    from ..leases.takeover import abandon_resumable

    held = held_lease_keys(connection)
    for schema in schemas:
        for lease_id in abandon_resumable(store, schema.database, lease_ids, held):
            found.add(lease_id)
            report.notes.append(f"store {store.name}: lease {lease_id} of {schema.database} abandoned on purpose")
