"""Claims: one staged write at a time for a path the writer chose (``<filepath@>``).

A claim is a session-level advisory lock ``(CLAIM_NS, crc32(store, path))`` on
the writer's database session, taken before the first byte and released when
the block has ended (after its commit, or after its cleanup). A second writer
that asks for the same path while the first holds it is refused at once, so two
writers never race to place bytes at one path. The lock ends with the session
that holds it: a killed writer's claim ends with its connection, and a commit
that a lost connection left running on the server keeps it until that
transaction has ended, so no second writer can place bytes at the path while
the first one's row may still commit.

Two different paths whose keys collide refuse each other as if they were one
(one chance in about two billion per pair of concurrent writers): a false
refusal, never a lost byte.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

CLAIM_NS = 0x646A7333  # "djs3"
RESUME_NS = 0x646A7334  # "djs4": a resume key (schema, table, primary key, field), one resumer at a time


@dataclass(frozen=True)
class Claim:
    """A path (or a resume key) claimed by one database session."""

    store: str
    path: str
    key: int
    pid: int
    namespace: int = CLAIM_NS


def claim_key(where: str) -> int:
    """The claim's second key for ``where`` (the store's protocol and the path's full location)."""
    return zlib.crc32(where.encode()) & 0x7FFFFFFF


def try_claim(
    connection: Any, store: str, path: str, where: str, namespace: int = CLAIM_NS
) -> tuple[Claim | None, int | None]:
    """Claim ``path`` on ``connection``'s session: the claim, or None and the backend pid of the session that
    holds it (None if it ended meanwhile)."""
    key = claim_key(where)
    taken, pid, holder = connection.query(
        "SELECT pg_try_advisory_lock(%s, %s), pg_backend_pid(), (SELECT pid FROM pg_locks WHERE locktype = "
        "'advisory' AND classid = %s::oid AND objid = %s::oid AND objsubid = 2 AND granted "
        "AND pid <> pg_backend_pid() LIMIT 1)",
        args=(namespace, key, namespace, key),
        reconnect=False,
    ).fetchone()
    if taken:
        return Claim(store, path, key, int(pid), namespace), None
    return None, None if holder is None else int(holder)


def release_claim(connection: Any, claim: Claim) -> None:
    """Release ``claim`` (a session that ended released it already)."""
    connection.query("SELECT pg_advisory_unlock(%s, %s)", args=(claim.namespace, claim.key), reconnect=False)
