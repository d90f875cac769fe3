"""What a collection found and did, per store, schema and section."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..listing import StoredFile


@dataclass
class SectionReport:
    """One section (``staging``, ``leases``, ``schema`` or ``hash``) of one schema in one store."""

    store: str
    schema: str
    section: str
    collectable: dict[str, list[StoredFile]] = field(default_factory=dict)
    protected: dict[str, str] = field(default_factory=dict)
    deleted: int = 0
    freed_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    referenced: int = 0

    @property
    def count(self) -> int:
        """Objects that may be (or were) deleted."""
        return len(self.collectable)

    @property
    def bytes(self) -> int:
        return sum(f.size for files in self.collectable.values() for f in files)

    @property
    def oldest(self) -> float | None:
        times = [f.mtime for files in self.collectable.values() for f in files if f.mtime is not None]
        return min(times) if times else None

    @property
    def paths(self) -> list[str]:
        """Every file that may be (or was) deleted."""
        return sorted(f.path for files in self.collectable.values() for f in files)

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "schema": self.schema,
            "section": self.section,
            "objects": self.count,
            "bytes": self.bytes,
            "oldest": _iso(self.oldest),
            "collectable": sorted(self.collectable),
            "protected": dict(sorted(self.protected.items())),
            "referenced": self.referenced,
            "deleted_files": self.deleted,
            "freed_bytes": self.freed_bytes,
            "errors": list(self.errors),
        }


@dataclass
class Report:
    """The result of one collection; ``dry_run`` reports only."""

    dry_run: bool
    grace: float
    sections: list[SectionReport] = field(default_factory=list)

    def section(self, section: str, schema: str | None = None) -> SectionReport:
        """The (first) report of ``section``, optionally for one schema."""
        for entry in self.sections:
            if entry.section == section and (schema is None or entry.schema == schema):
                return entry
        raise KeyError(section)

    @property
    def count(self) -> int:
        return sum(s.count for s in self.sections)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.sections)

    @property
    def deleted(self) -> int:
        return sum(s.deleted for s in self.sections)

    @property
    def errors(self) -> list[str]:
        return [e for s in self.sections for e in s.errors]

    @property
    def paths(self) -> list[str]:
        return sorted(p for s in self.sections for p in s.paths)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "grace_seconds": self.grace,
            "objects": self.count,
            "bytes": self.bytes,
            "deleted_files": self.deleted,
            "errors": self.errors,
            "sections": [s.as_dict() for s in self.sections],
        }

    def format(self) -> str:
        """A table for people: one line per section, then the errors."""
        verb = "would delete" if self.dry_run else "deleted"
        lines = [f"{'store':<12} {'schema':<24} {'section':<8} {'objects':>8} {'bytes':>14} {'protected':>9}  oldest"]
        for s in self.sections:
            lines.append(
                f"{s.store:<12} {s.schema:<24} {s.section:<8} {s.count:>8} {s.bytes:>14} "
                f"{len(s.protected):>9}  {_iso(s.oldest) or '-'}"
            )
        lines.append(f"{verb}: {self.count} objects, {self.bytes} bytes (grace {self.grace:g} s)")
        if self.dry_run and self.count:
            lines.append("dry run: nothing was deleted; run again with --delete to delete")
        lines.extend(f"error: {e}" for e in self.errors)
        return "\n".join(lines)


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
