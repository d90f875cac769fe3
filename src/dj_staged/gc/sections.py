"""The sections of a store a collection looks at, and the layouts it refuses to touch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import StagedInsertError
from ..layout import LEASE_SECTION, STAGING_PREFIX, lease_section, section_path, staging_section

SCHEMA, HASH, STAGING, LEASES, UPLOADS = "schema", "hash", "staging", "leases", "uploads"


def check_layout(spec: dict[str, Any], schema_names: Iterable[str]) -> None:
    """Refuse a store whose DataJoint sections overlap ``_staging/`` (collecting it would touch canonical objects)."""
    schema_names = list(schema_names)
    for key in ("hash_prefix", "schema_prefix", "filepath_prefix"):
        prefix = (spec.get(key) or "").strip("/")
        if prefix and (prefix == STAGING_PREFIX or prefix.startswith(STAGING_PREFIX + "/")):
            raise StagedInsertError(
                f"The store's {key} {prefix!r} overlaps dj-staged's '{STAGING_PREFIX}/' section; "
                "refusing to collect: give the store another prefix"
            )
        if not prefix and key != "filepath_prefix" and STAGING_PREFIX in schema_names:
            raise StagedInsertError(
                f"A schema named '{STAGING_PREFIX}' with an empty {key} overlaps dj-staged's section"
            )
    if LEASE_SECTION in schema_names:
        raise StagedInsertError(f"A schema named '{LEASE_SECTION}' overlaps dj-staged's lease section")


def section_roots(spec: dict[str, Any], schema: str) -> dict[str, str]:
    """Where each section of ``schema`` lives in the store."""
    return {
        SCHEMA: section_path(spec["schema_prefix"], schema),
        HASH: section_path(spec["hash_prefix"], schema),
        STAGING: staging_section(schema),
        LEASES: lease_section(schema),
    }
