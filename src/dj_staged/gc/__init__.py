"""Garbage collection of what staged inserts and deleted rows leave behind, by the writer–collector protocol.

``collect`` runs DataJoint's collection (``_schema/``, ``_hash/``) and
dj-staged's (``_staging/``, leases, incomplete S3 uploads) together, never
deleting an object a row references, an object a live lease covers (a staged
write in flight) or, when no lease names it, an object younger than the grace
period. ``collect_staging`` does only dj-staged's part. Both report by default
and delete only with ``dry_run=False``; the command line is ``dj-staged gc``.

Running DataJoint's own ``dj.gc.GarbageCollector(...).collect(dry_run=False)``
while staged inserts are in flight deletes their objects: use ``collect`` instead.
"""

from .collector import DEFAULT_GRACE, collect, collect_staging
from .policy import ABANDONED, LEASED, REFERENCED, UNDATED, YOUNG
from .report import Report, SectionReport

__all__ = [
    "ABANDONED",
    "DEFAULT_GRACE",
    "LEASED",
    "REFERENCED",
    "UNDATED",
    "YOUNG",
    "Report",
    "SectionReport",
    "collect",
    "collect_staging",
]
