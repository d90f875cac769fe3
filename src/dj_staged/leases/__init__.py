"""Leases: what protects a staged write in flight from the collector, shared by the session and ``gc``.

See :mod:`~dj_staged.leases.locks` (liveness and the gate),
:mod:`~dj_staged.leases.records` (the records in the store),
:mod:`~dj_staged.leases.keeper` (the writer's side) and
:mod:`~dj_staged.leases.reclaim` (removing a rolled-back row's promoted objects).
"""

from .keeper import LeaseKeeper
from .locks import LeaseLock, exclusive_gate, held_lease_keys, shared_gate
from .reclaim import covers, live_paths, reclaim
from .records import LeaseEntry, LeaseRecord, scan_leases

__all__ = [
    "LeaseEntry",
    "LeaseKeeper",
    "LeaseLock",
    "LeaseRecord",
    "covers",
    "exclusive_gate",
    "held_lease_keys",
    "live_paths",
    "reclaim",
    "scan_leases",
    "shared_gate",
]
