"""Which stored objects a collection may delete: grouped into objects, judged by leases, references and age.

Files are grouped into the object they belong to (every chunk of a Zarr
directory is one object). An object is kept when a row references it, when a
live lease covers it (a staged write in flight, however old its files), or,
when no lease names it at all, while it is younger than the grace period: that
protects DataJoint's own ``insert1`` between writing an object and inserting
its row. An object the lease of an abandoned write names (its writer was
interrupted, or is gone) belongs to no row unless one references it, so it is
collected at once, unless that write was resumable (``resume=True``) and its
last durable byte is younger than the resume window: it is then kept for the
attempt that resumes it, and collected once the window has passed. An
object whose store reports no modification time is never collected by age.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..leases import covers
from ..stores import StoredFile

REFERENCED = "referenced by a row"
LEASED = "in flight (live lease)"
YOUNG = "younger than the grace period"
UNDATED = "no modification time"
OUTSIDE = "not DataJoint's or dj-staged's: not looked into"
NOT_COLLECTED = "folder of a schema not collected in this run: not looked into"
ABANDONED = "left by an abandoned write"
UNREFERENCED = "no row references it"  # and it is older than the grace period
ABANDONED_LEASE = "lease of an abandoned write"
REPLACED = "not what the abandoned write placed there (replaced since): not its to reclaim"
RESUMABLE = "kept for resumption (an interrupted resume=True write, within its resume window)"


@dataclass
class Decision:
    """Objects (keyed by their root path) that may be deleted, and those kept with the reason and their files.

    Referenced objects are only counted (with their files and bytes): they are
    most of a schema's store.
    """

    collectable: dict[str, list[StoredFile]] = field(default_factory=dict)
    protected: dict[str, str] = field(default_factory=dict)
    kept: dict[str, list[StoredFile]] = field(default_factory=dict)
    abandoned: set[str] = field(default_factory=set)
    referenced: int = 0
    referenced_files: int = 0
    referenced_bytes: int = 0


@dataclass
class Rules:
    """What a collection knows when it judges: references, the paths of live and abandoned leases, the age cutoff."""

    referenced: Callable[[str, list[StoredFile]], bool]
    live: list[str]
    dead: list[str]
    cutoff: float
    resumable: list[str] = field(default_factory=list)  # the paths of interrupted resumable writes in their window


def classify(files: Iterable[StoredFile], root_of: Callable[[str], str], rules: Rules) -> Decision:
    """Sort ``files`` into collectable and protected objects (``cutoff`` is ``now - grace``)."""
    groups: dict[str, list[StoredFile]] = {}
    for stored in files:
        groups.setdefault(root_of(stored.path), []).append(stored)
    decision = Decision()
    for root, members in sorted(groups.items()):
        if rules.referenced(root, members):
            decision.referenced += 1  # counted, not listed: a schema's live objects are most of its store
            decision.referenced_files += len(members)
            decision.referenced_bytes += sum(m.size for m in members)
            continue
        if covers(rules.live, root) or any(covers(rules.live, m.path) for m in members):
            decision.protected[root] = LEASED
        elif covers(rules.resumable, root) or any(covers(rules.resumable, m.path) for m in members):
            decision.protected[root] = RESUMABLE
        elif covers(rules.dead, root) or any(covers(rules.dead, m.path) for m in members):
            decision.collectable[root] = members
            decision.abandoned.add(root)
        elif any(m.mtime is None for m in members):
            decision.protected[root] = UNDATED
        elif max(m.mtime for m in members if m.mtime is not None) > rules.cutoff:
            decision.protected[root] = YOUNG
        else:
            decision.collectable[root] = members
        if root in decision.protected:
            decision.kept[root] = members
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


def lease_root(path: str) -> str:
    """``_staging/_leases/{schema}/{lease_id}`` (or ``….jsonl``, a lease that is one file): the lease a lease file
    belongs to."""
    return "/".join(path.split("/")[:4])
