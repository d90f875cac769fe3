"""The sections dj-staged owns in a store: ``_staging/{schema}/`` and its leases.

A staging object is what a hash-addressed staged write leaves when its block
never finished (a killed process, ``KeyboardInterrupt``, a cleanup that failed);
no row ever references ``_staging/``. An expired or unreadable lease is what a
writer that died leaves next to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from datajoint.errors import DataJointError

from .leases import DEFAULT_TTL, LEASE_SECTION, STAGING_PREFIX, LeaseScan, covers
from .listing import list_files
from .policy import classify, staging_root
from .report import SectionReport

REFERENCED = "referenced by a row"


def check_layout(spec: dict[str, Any], schema_names: Iterable[str]) -> None:
    """Refuse a store whose DataJoint sections overlap ``_staging/`` (collecting it would touch canonical objects)."""
    for key in ("hash_prefix", "schema_prefix", "filepath_prefix"):
        prefix = (spec.get(key) or "").strip("/")
        if prefix and (prefix == STAGING_PREFIX or prefix.startswith(STAGING_PREFIX + "/")):
            raise DataJointError(
                f"The store's {key} {prefix!r} overlaps dj-staged's '{STAGING_PREFIX}/' section; "
                "refusing to collect: give the store another prefix"
            )
        if not prefix and key != "filepath_prefix" and STAGING_PREFIX in schema_names:
            raise DataJointError(f"A schema named '{STAGING_PREFIX}' with an empty {key} overlaps dj-staged's section")
    if LEASE_SECTION in schema_names:
        raise DataJointError(f"A schema named '{LEASE_SECTION}' overlaps dj-staged's lease section")


def staging_report(
    backend: Any, store: str, schema: str, leases: LeaseScan, referenced: set[str], cutoff: float
) -> SectionReport:
    """Staging objects of ``schema`` that no live lease covers and that are older than the grace period."""
    files = list_files(backend, f"{STAGING_PREFIX}/{schema}")
    decision = classify(files.values(), staging_root, leases.live_paths, cutoff)
    report = SectionReport(store, schema, "staging", decision.collectable, decision.protected)
    for root in [r for r in report.collectable if covers(referenced, r)]:
        del report.collectable[root]
        report.protected[root] = REFERENCED
    return report


def lease_report(store: str, schema: str, leases: LeaseScan, cutoff: float, now: float) -> SectionReport:
    """Expired and unreadable leases older than the grace period.

    An unreadable lease renewed within the last ``DEFAULT_TTL`` seconds (or the
    grace period, if longer) may belong to a live writer whose paths cannot be
    read: it is kept, and it is an error that blocks deletion in this schema.
    """
    decision = classify(leases.expired.values(), lambda path: path, [], cutoff)
    unreadable = classify(leases.unreadable.values(), lambda path: path, [], min(cutoff, now - DEFAULT_TTL))
    report = SectionReport(store, schema, "leases", decision.collectable, decision.protected)
    report.collectable.update(unreadable.collectable)
    report.protected.update(unreadable.protected)
    for path in unreadable.protected:
        if path.endswith(".json"):
            report.errors.append(f"unreadable lease {path} may belong to a live writer; {schema} is left alone")
    return report
