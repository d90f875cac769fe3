"""The sections of a store a collection looks at, the layouts it refuses to touch, and what lies outside them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import StagedInsertError
from ..layout import LEASE_SECTION, LEASES_ROOT, STAGING_PREFIX, lease_section, section_path, staging_section
from ..stores import StagedStore, StoredFile

SCHEMA, HASH, STAGING, LEASES, UPLOADS = "schema", "hash", "staging", "leases", "uploads"
PLACEMENTS = "placements"  # what dead writes placed at paths they chose (<filepath@>), named by their leases


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


@dataclass
class StoreSurvey:
    """One level of a store's top and of each section: which schemas have folders there, and what else is there."""

    top_folders: set[str] = field(default_factory=set)
    top_files: dict[str, StoredFile] = field(default_factory=dict)
    schemas: dict[str, set[str]] = field(default_factory=dict)  # section -> names of the schema folders in it

    def schema_names(self) -> set[str]:
        """Every schema with a folder in some section of the store."""
        return set().union(*self.schemas.values()) if self.schemas else set()


def section_prefixes(spec: dict[str, Any]) -> dict[str, str]:
    """The top folder of each section in a store with settings ``spec`` (``""``: the store's top)."""
    return {
        SCHEMA: (spec.get("schema_prefix") or "").strip("/"),
        HASH: (spec.get("hash_prefix") or "").strip("/"),
        STAGING: STAGING_PREFIX,
        LEASES: LEASES_ROOT,
    }


def survey_store(store: StagedStore) -> StoreSurvey:
    """List the top of the store and each section one level deep (at most five shallow listings)."""
    survey = StoreSurvey()
    survey.top_folders, survey.top_files = store.list_folder("")
    for section, prefix in section_prefixes(store.spec).items():
        if not prefix:
            folders = set(survey.top_folders)  # an empty prefix: the schemas' folders are at the top
        elif prefix.split("/")[0] in survey.top_folders:
            folders, _files = store.list_folder(prefix)
        else:
            folders = set()
        survey.schemas[section] = folders
    survey.schemas[STAGING].discard(LEASE_SECTION)
    return survey
