"""The sections of a store a collection looks at, the layouts it refuses to touch, and what lies outside them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import StagedInsertError
from ..layout import LEASE_SECTION, LEASES_ROOT, STAGING_PREFIX, lease_section, section_path, staging_section
from ..stores import StagedStore, StoredFile

if TYPE_CHECKING:
    from .report import SectionReport

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


@dataclass
class StoreSurvey:
    """One level of a store's top and of each section: which schemas have folders there, and what else is there."""

    top_folders: set[str] = field(default_factory=set)
    top_files: dict[str, StoredFile] = field(default_factory=dict)
    schemas: dict[str, set[str]] = field(default_factory=dict)  # section -> names of the schema folders in it

    def schema_names(self) -> set[str]:
        """Every schema with a folder in some section of the store."""
        return set().union(*self.schemas.values()) if self.schemas else set()


def _section_prefixes(spec: dict[str, Any]) -> dict[str, str]:
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
    for section, prefix in _section_prefixes(store.spec).items():
        if not prefix:
            folders = set(survey.top_folders)  # an empty prefix: the schemas' folders are at the top
        elif prefix.split("/")[0] in survey.top_folders:
            folders, _files = store.list_folder(prefix)
        else:
            folders = set()
        survey.schemas[section] = folders
    survey.schemas[STAGING].discard(LEASE_SECTION)
    return survey


def outside_report(survey: StoreSurvey, store: str, spec: dict[str, Any], collected: Iterable[str]) -> SectionReport:
    """What the survey found that belongs to no section of the collected schemas: kept, with the reason.

    Only names one level deep are known (the folders are not listed further), so a
    folder is reported as one object without a file count.
    """
    from .policy import NOT_COLLECTED, OUTSIDE
    from .report import OUTSIDE_SECTION, SectionReport

    collected = set(collected)
    prefixes = _section_prefixes(spec)
    ours = {prefix.split("/")[0] for prefix in prefixes.values() if prefix}
    open_top = not prefixes[SCHEMA] or not prefixes[HASH]  # schema folders share the top with everything else
    report = SectionReport(store, "-", OUTSIDE_SECTION)
    for name in sorted(survey.top_folders):
        if name in ours or (open_top and name in collected):
            continue
        report.protected[f"{name}/"] = OUTSIDE
        report.kept[f"{name}/"] = None
    for path, stored in sorted(survey.top_files.items()):
        report.protected[path] = OUTSIDE
        report.kept[path] = [stored]
    for section, folders in survey.schemas.items():
        prefix = prefixes[section]
        if not prefix:
            continue
        for name in sorted(folders - collected):
            report.protected[f"{prefix}/{name}/"] = NOT_COLLECTED
            report.kept[f"{prefix}/{name}/"] = None
    return report
