"""Garbage collection of what staged inserts leave behind, and protection of the ones in flight.

``collect`` runs DataJoint's collection (``_schema/``, ``_hash/``) and
dj-staged's (``_staging/``, expired leases) together, never deleting an object
a row references, an object a live lease covers (a staged write in flight) or
an object younger than the grace period. ``collect_staging`` does only
dj-staged's part. Both report by default and delete only with ``dry_run=False``;
the command line is ``dj-staged gc``.

Running DataJoint's own ``dj.gc.GarbageCollector(...).collect(dry_run=False)``
while staged inserts are in flight deletes their objects: use ``collect`` instead.
"""

from .combined import DEFAULT_GRACE, collect, collect_staging
from .leases import DEFAULT_TTL, Lease, LeaseKeeper, lease_section, scan_leases
from .report import Report, SectionReport

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_TTL",
    "Lease",
    "LeaseKeeper",
    "Report",
    "SectionReport",
    "collect",
    "collect_staging",
    "lease_section",
    "scan_leases",
]
