"""The target of dj-staged's ``datajoint.codecs`` entry point: the ``zarr`` codec, and nothing more.

DataJoint loads every ``datajoint.codecs`` entry point the first time it
resolves a codec by name, and registers the class each one loads under the
entry point's name unless that name is registered already. Resolving
:data:`ZarrCodec` here imports dj-staged's ``<zarr@>`` codec (zarr, numpy and
the schema-addressed lifecycle), never its sessions, leases, collector or
testing kit, so ``import datajoint`` and a codec lookup stay light.

The name ``zarr`` goes to another package when one provides it (such as
dj-zarr-codecs): resolving :data:`ZarrCodec` then loads that package's entry
point instead, whose class registers itself under ``zarr`` as it is defined,
so DataJoint keeps it whichever entry point it reads first, and dj-staged's
class is never registered. dj-staged gives that codec staged support through
an adapter (:mod:`dj_staged.codecs`).
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

logger = logging.getLogger(__name__)

GROUP = "datajoint.codecs"


def other_providers(name: str) -> list[EntryPoint]:
    """``datajoint.codecs`` entry points named ``name`` that are not dj-staged's."""
    return [point for point in entry_points(group=GROUP, name=name) if not point.value.startswith("dj_staged.")]


def __getattr__(name: str) -> Any:
    if name != "ZarrCodec":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for point in other_providers("zarr"):
        try:
            return point.load()  # defining its class registers it under `zarr`; DataJoint then skips ours
        except Exception:
            logger.warning("Loading codec 'zarr' from %s failed; using dj-staged's", point.value, exc_info=True)
    from .codecs.zarr import ZarrCodec

    return ZarrCodec
