"""One collection that runs DataJoint's garbage collection and dj-staged's together, safely.

DataJoint's ``GarbageCollector`` deletes every schema-addressed object that
no row references, including the canonical path of a staged insert still being
written. It cannot be told about leases, so this module computes the same
orphan list (DataJoint's own sections and matching rules) and deletes it itself,
skipping every object a live lease covers or that is younger than the grace
period. Leases are read before the references and again right before deleting,
so a write that starts or finishes during the collection is never lost.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from datajoint.gc import _BASE32_HASH, _is_covered
from datajoint.hash_registry import get_store_backend

from .leases import LEASE_SECTION, STAGING_PREFIX, LeaseScan, covers, scan_leases
from .listing import StoredFile, delete_file, list_files, section_path
from .policy import LEASED, classify, schema_root
from .references import referenced_paths
from .report import Report, SectionReport
from .staging import check_layout, lease_report, staging_report

DEFAULT_GRACE = timedelta(hours=24)


def collect(
    *schemas: Any,
    store: str | None = None,
    grace: timedelta | float = DEFAULT_GRACE,
    dry_run: bool = True,
    now: float | None = None,
    config: Any = None,
    datajoint: bool = True,
) -> Report:
    """Report (and with ``dry_run=False`` delete) what no row references and no staged write still needs.

    ``datajoint=True`` covers DataJoint's ``_schema/`` and ``_hash/`` sections
    as well as ``_staging/``; ``datajoint=False`` only ``_staging/`` and its leases.
    ``now`` (POSIX seconds) replaces the clock, for tests and for reasoning
    about what a later run would do.
    """
    if not schemas:
        raise ValueError("collect() needs at least one schema")
    config = config if config is not None else schemas[0].connection._config
    grace_seconds = grace.total_seconds() if isinstance(grace, timedelta) else float(grace)
    spec = config.get_store_spec(store)
    names = [schema.database for schema in schemas]
    check_layout(spec, names)
    backend = get_store_backend(store, config=config)
    store_name = store if store is not None else config.stores["default"]
    now = time.time() if now is None else now
    cutoff = now - grace_seconds

    leases = {name: scan_leases(backend, name, now) for name in names}
    referenced = referenced_paths(schemas)
    report = Report(dry_run=dry_run, grace=grace_seconds)
    for name in names:
        if datajoint:
            sections = _datajoint_reports(backend, spec, store_name, name, leases[name], referenced, cutoff)
            report.sections.extend(sections)
        report.sections.append(staging_report(backend, store_name, name, leases[name], referenced, cutoff))
        report.sections.append(lease_report(store_name, name, leases[name], cutoff, now))
    if not dry_run:
        _delete(backend, spec, report, now)
    return report


def collect_staging(*schemas: Any, **options: Any) -> Report:
    """Only dj-staged's sections: ``_staging/{schema}/`` and expired leases."""
    return collect(*schemas, datajoint=False, **options)


def _datajoint_reports(
    backend: Any, spec: dict, store: str, schema: str, leases: LeaseScan, referenced: set[str], cutoff: float
) -> list[SectionReport]:
    """DataJoint's orphans in ``{schema_prefix}/{schema}`` and ``{hash_prefix}/{schema}``, minus protected ones."""
    schema_prefix, hash_prefix = spec["schema_prefix"].strip("/"), spec["hash_prefix"].strip("/")
    schema_files = list_files(backend, section_path(schema_prefix, schema))
    orphans = [f for p, f in schema_files.items() if not _is_covered(p, referenced)]
    decision = classify(orphans, lambda p: schema_root(p, schema_prefix), leases.live_paths, cutoff)
    reports = [SectionReport(store, schema, "schema", decision.collectable, decision.protected)]
    hash_files = list_files(backend, section_path(hash_prefix, schema))
    orphans = [
        f
        for p, f in hash_files.items()
        if _BASE32_HASH.match(p.rsplit("/", 1)[-1]) and not p.endswith(".manifest.json") and p not in referenced
    ]
    decision = classify(orphans, lambda p: p, leases.live_paths, cutoff)
    reports.append(SectionReport(store, schema, "hash", decision.collectable, decision.protected))
    return reports


def _section_root(spec: dict, entry: SectionReport) -> str:
    prefix = {
        "schema": spec["schema_prefix"],
        "hash": spec["hash_prefix"],
        "staging": STAGING_PREFIX,
        "leases": f"{STAGING_PREFIX}/{LEASE_SECTION}",
    }[entry.section]
    return section_path(prefix, entry.schema)


def _delete(backend: Any, spec: dict, report: Report, now: float) -> None:
    """Delete what the report lists, after a last look at the leases; per-file errors are recorded."""
    blocked = {s.schema for s in report.sections if s.errors}
    live = {name: scan_leases(backend, name, now).live_paths for name in {s.schema for s in report.sections}}
    for entry in report.sections:
        if entry.schema in blocked:
            continue
        for root in [r for r, files in entry.collectable.items() if _now_leased(live[entry.schema], r, files)]:
            del entry.collectable[root]
            entry.protected[root] = LEASED
        stop_at = _section_root(spec, entry)
        for files in entry.collectable.values():
            for stored in files:
                try:
                    delete_file(backend, stored.path, stop_at)
                except FileNotFoundError:
                    continue
                except Exception as error:
                    entry.errors.append(f"could not delete {stored.path}: {type(error).__name__}: {error}")
                    continue
                entry.deleted += 1
                entry.freed_bytes += stored.size


def _now_leased(live: list[str], root: str, files: list[StoredFile]) -> bool:
    return covers(live, root) or any(covers(live, f.path) for f in files)
