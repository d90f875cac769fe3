"""Which stored objects a collection may delete: grouped into objects, never in flight, never young.

Files are grouped into the object they belong to (every chunk of a Zarr
directory is one object), and an object is collectable only when no live lease
covers it and its newest file is older than the grace period. An object whose
store reports no modification time is never collected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .leases import covers
from .listing import StoredFile

LEASED, YOUNG, UNDATED = "in flight (live lease)", "younger than the grace period", "no modification time"


@dataclass
class Decision:
    """Objects (keyed by their root path) that may be deleted, and those kept with the reason."""

    collectable: dict[str, list[StoredFile]] = field(default_factory=dict)
    protected: dict[str, str] = field(default_factory=dict)


def classify(files: Iterable[StoredFile], root_of: Callable[[str], str], leased: list[str], cutoff: float) -> Decision:
    """Sort ``files`` (all candidates for deletion) into collectable and protected objects.

    ``cutoff`` is the newest modification time an object may have and still
    be collected (``now - grace``).
    """
    groups: dict[str, list[StoredFile]] = {}
    for stored in files:
        groups.setdefault(root_of(stored.path), []).append(stored)
    decision = Decision()
    for root, members in sorted(groups.items()):
        if covers(leased, root) or any(covers(leased, m.path) for m in members):
            decision.protected[root] = LEASED
        elif any(m.mtime is None for m in members):
            decision.protected[root] = UNDATED
        elif max(m.mtime for m in members) > cutoff:
            decision.protected[root] = YOUNG
        else:
            decision.collectable[root] = members
    return decision


def staging_root(path: str) -> str:
    """``_staging/{schema}/{table}/{name}``: the object a staging file belongs to."""
    return "/".join(path.split("/")[:4])


def schema_root(path: str, schema_prefix: str) -> str:
    """``{prefix}/{schema}/{table}/{k=v}/.../{field}_{token}{ext}``: the object a schema-addressed file belongs to.

    A directory-valued object's files and its ``.manifest.json`` sidecar
    belong to the same object.
    """
    if path.endswith(".manifest.json"):
        path = path[: -len(".manifest.json")]
    segments = path.split("/")
    start = 3 if schema_prefix.strip("/") else 2  # past prefix, schema and table
    for index in range(start, len(segments)):
        if "=" not in segments[index]:
            return "/".join(segments[: index + 1])
    return path
