"""Where dj-staged keeps things in a store: one definition of each section.

- ``_staging/{schema}/{table}/{field}_{token}{ext}``: hash-addressed content
  while it is written, before it moves to its canonical ``_hash/`` path;
- ``_staging/_leases/{schema}/{lease_id}/``: the lease of a staged write in
  flight (see :mod:`dj_staged.leases`).

DataJoint's own sections (``schema_prefix``, ``hash_prefix``) come from the
store's spec.
"""

from __future__ import annotations

STAGING_PREFIX = "_staging"
LEASE_SECTION = "_leases"


def staging_section(schema: str) -> str:
    """``_staging/{schema}``: the staging objects of one schema."""
    return f"{STAGING_PREFIX}/{schema}"


LEASES_ROOT = f"{STAGING_PREFIX}/{LEASE_SECTION}"  # the leases of every schema


def lease_section(schema: str) -> str:
    """``_staging/_leases/{schema}``: the leases of one schema."""
    return f"{LEASES_ROOT}/{schema}"


def section_path(*parts: str) -> str:
    """Join non-empty path parts with ``/``."""
    return "/".join(part.strip("/") for part in parts if part and part.strip("/"))
