"""What a collection found and did, per store, schema and section, for people (``format``) and scripts (``as_dict``).

Objects, not files, are the unit: a directory value (a Zarr array, a multi-file
``<object@>``) is one object, reported with its file count and total bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..stores import StoredFile
from ..text import count, human_bytes, human_duration, iso, table, utc
from .policy import ABANDONED, ABANDONED_LEASE, LEASED, NOT_COLLECTED, OUTSIDE, REFERENCED, UNDATED, UNREFERENCED, YOUNG
from .sections import HASH, LEASES, SCHEMA, StoreSurvey, section_prefixes

OUTSIDE_SECTION = "outside"

# the columns of the table, each counting the kept objects of one or more reasons
_KEPT_COLUMNS = (("referenced", (REFERENCED,)), ("in flight", (LEASED,)), ("young", (YOUNG,)))
_OUTSIDE_REASONS = (OUTSIDE, NOT_COLLECTED)


@dataclass
class SectionReport:
    """One section (``schema``, ``hash``, ``staging``, ``uploads``, ``leases``, ``outside``) of a schema in a store.

    ``collectable`` and ``kept`` map each object (its root path) to its files;
    ``protected`` gives the reason each kept object is kept (``kept`` is None
    for an object whose files were not listed: a folder outside the sections).
    Objects a row references are only counted.
    """

    store: str
    schema: str
    section: str
    collectable: dict[str, list[StoredFile]] = field(default_factory=dict)
    protected: dict[str, str] = field(default_factory=dict)
    deleted: int = 0
    freed_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    referenced: int = 0
    kept: dict[str, list[StoredFile] | None] = field(default_factory=dict)
    referenced_files: int = 0
    referenced_bytes: int = 0
    abandoned: set[str] = field(default_factory=set)  # collectable objects an abandoned write's lease names

    def why(self, root: str) -> str:
        """Why a collectable object may be deleted."""
        if self.section == LEASES:
            return ABANDONED_LEASE
        return ABANDONED if root in self.abandoned else UNREFERENCED

    @property
    def count(self) -> int:
        """Objects that may be (or were) deleted."""
        return len(self.collectable)

    @property
    def files(self) -> int:
        """Files of the objects that may be (or were) deleted."""
        return sum(len(files) for files in self.collectable.values())

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

    @property
    def reasons(self) -> Counter[str]:
        """Kept objects per reason, referenced ones included."""
        counted = Counter(self.protected.values())
        if self.referenced:
            counted[REFERENCED] += self.referenced
        return counted

    @property
    def empty(self) -> bool:
        return not (self.collectable or self.protected or self.referenced or self.errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "schema": self.schema,
            "section": self.section,
            "objects": self.count,
            "files": self.files,
            "bytes": self.bytes,
            "oldest": iso(self.oldest),
            "collectable": [
                {**_object(root, files), "why": self.why(root)} for root, files in sorted(self.collectable.items())
            ],
            "protected": [
                {**_object(root, self.kept.get(root)), "reason": reason}
                for root, reason in sorted(self.protected.items())
            ],
            "referenced": {"objects": self.referenced, "files": self.referenced_files, "bytes": self.referenced_bytes},
            "deleted_files": self.deleted,
            "freed_bytes": self.freed_bytes,
            "errors": list(self.errors),
        }


def _object(root: str, files: list[StoredFile] | None) -> dict[str, Any]:
    if files is None:
        return {"object": root, "files": None, "bytes": None, "oldest": None}
    times = [f.mtime for f in files if f.mtime is not None]
    return {
        "object": root,
        "files": len(files),
        "bytes": sum(f.size for f in files),
        "oldest": iso(min(times)) if times else None,
    }


@dataclass
class Report:
    """The result of one collection (one or more stores); ``dry_run`` reports only."""

    dry_run: bool
    grace: float
    sections: list[SectionReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    looked_at: list[str] = field(default_factory=list)  # the stores collected, even those with nothing in them

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
    def files(self) -> int:
        return sum(s.files for s in self.sections)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.sections)

    @property
    def deleted(self) -> int:
        return sum(s.deleted for s in self.sections)

    @property
    def freed_bytes(self) -> int:
        return sum(s.freed_bytes for s in self.sections)

    @property
    def errors(self) -> list[str]:
        return [e for s in self.sections for e in s.errors]

    @property
    def paths(self) -> list[str]:
        return sorted(p for s in self.sections for p in s.paths)

    @property
    def reasons(self) -> Counter[str]:
        """Kept objects per reason, over every section."""
        total: Counter[str] = Counter()
        for s in self.sections:
            total.update(s.reasons)
        return total

    @property
    def stores(self) -> list[str]:
        return sorted({*self.looked_at, *(s.store for s in self.sections)})

    def merge(self, other: Report) -> None:
        """Add another collection's sections and notes (another store, another schema)."""
        self.sections.extend(other.sections)
        self.notes.extend(other.notes)
        self.looked_at.extend(store for store in other.looked_at if store not in self.looked_at)

    def summary(self) -> str:
        """One sentence: what would be (or was) deleted, what is kept and why, and whether anything failed."""
        what = f"{count(self.count, 'object')} ({count(self.files, 'file')}, {human_bytes(self.bytes)})"
        where = f"in {count(len(self.stores), 'store')}"
        if self.dry_run:
            head = f"Dry run: would delete {what} {where}" if self.count else f"Dry run: nothing to delete {where}"
        else:
            head = f"Deleted {what} {where}" if self.count else f"Deleted nothing {where}"
        reasons = {r: n for r, n in self.reasons.items() if r not in _OUTSIDE_REASONS}
        kept = sum(reasons.values())
        if kept:
            named = [f"{n:,} {self._reason_text(reason)}" for reason, n in sorted(reasons.items(), key=_by_column)]
            head += f"; kept {count(kept, 'object')}: " + ", ".join(named)
        left = self._left_alone()
        if left:
            head += "; left alone, not looked into: " + " and ".join(left)
        errors = self.errors
        if errors:
            head += f"; {count(len(errors), 'error')} (listed below)"
        return head + "."

    def _left_alone(self) -> list[str]:
        """What the collection did not look into: other schemas' folders, and folders that are not ours."""
        other: list[str] = []
        outside: list[str] = []
        for s in self.sections:
            for root, reason in s.protected.items():
                if reason == NOT_COLLECTED:
                    other.append(root)
                elif reason == OUTSIDE:
                    outside.append(root)
        parts = []
        if other:
            schemas = sorted({root.rstrip("/").rsplit("/", 1)[-1] for root in other})
            named = f" ({', '.join(schemas)})" if len(schemas) <= 3 else ""
            parts.append(
                f"{count(len(other), 'folder')} of {count(len(schemas), 'schema')} not collected in this run{named}"
            )
        if outside:
            named = f" ({', '.join(sorted(outside))})" if len(outside) <= 3 else ""
            verb = "is" if len(outside) == 1 else "are"
            parts.append(
                f"{count(len(outside), 'name')} at the store's top that {verb} not DataJoint's or dj-staged's{named}"
            )
        return parts

    def _reason_text(self, reason: str) -> str:
        return f"{reason} ({human_duration(self.grace)})" if reason == YOUNG else reason

    def format(self, limit: int = 10) -> str:
        """For people: the summary line, a table per section, then up to ``limit`` objects of each list."""
        lines = [self.summary(), ""]
        undated = any(s.reasons.get(UNDATED) for s in self.sections)
        header = ["store", "schema", "section", "delete", "files", "size", "oldest"]
        header += [name for name, _ in _KEPT_COLUMNS] + ["outside"] + (["undated"] if undated else [])
        rows = []
        shown: set[tuple[str, str]] = set()
        for s in self.sections:
            if s.empty and s.section != OUTSIDE_SECTION:
                continue
            shown.add((s.store, s.schema))
            rows.append(self._row(s, undated))
        for s in self.sections:  # a schema with nothing in any section still gets a line
            if (s.store, s.schema) not in shown:
                shown.add((s.store, s.schema))
                rows.append(self._row(SectionReport(s.store, s.schema, "-"), undated))
        lines += table(header, rows, right=[3, 4, 5, *range(7, len(header))])
        deleted = "would delete" if self.dry_run else "deleted"
        lines += self._listing(deleted, ["oldest", "why"], self._collectable(), limit)
        lines += self._listing("kept", ["why"], self._kept(), limit, note="objects a row references are only counted")
        lines += [f"note: {note}" for note in self.notes]
        if self.dry_run and self.count:
            lines.append("dry run: nothing was deleted; run again with --delete to delete")
        lines.extend(f"error: {e}" for e in self.errors)
        return "\n".join(lines)

    def _row(self, s: SectionReport, undated: bool) -> list[Any]:
        reasons = s.reasons
        kept = [sum(reasons.get(r, 0) for r in group) for _, group in _KEPT_COLUMNS]
        kept.append(sum(reasons.get(r, 0) for r in _OUTSIDE_REASONS))
        if undated:
            kept.append(reasons.get(UNDATED, 0))
        if s.section == OUTSIDE_SECTION:
            return [s.store, s.schema, s.section, "-", "-", "-", "-", *kept]
        return [s.store, s.schema, s.section, s.count, s.files, human_bytes(s.bytes), utc(s.oldest), *kept]

    def _collectable(self) -> list[list[str]]:
        return [
            [s.store, root, _files_text(files), human_bytes(sum(f.size for f in files)), _age_text(files), s.why(root)]
            for s in self.sections
            for root, files in sorted(s.collectable.items())
        ]

    def _kept(self) -> list[list[str]]:
        """Kept objects, those in flight first (the order of the table's columns)."""
        kept = [(s, root, reason) for s in self.sections for root, reason in s.protected.items()]
        kept.sort(key=lambda item: (_by_column((item[2], 0)), item[0].store, item[1]))
        rows = []
        for s, root, reason in kept:
            files = s.kept.get(root)
            size = None if files is None else sum(f.size for f in files)
            rows.append([s.store, root, _files_text(files), human_bytes(size), self._reason_text(reason)])
        return rows

    @staticmethod
    def _listing(title: str, last: list[str], rows: list[list[str]], limit: int, note: str = "") -> list[str]:
        if not rows or limit <= 0:
            return []
        shown = rows[:limit]
        more = f"first {len(shown)} of {len(rows):,}; --json lists all" if len(rows) > len(shown) else ""
        extra = "; ".join(part for part in (more, note) if part)
        lines = ["", f"{title} ({extra}):" if extra else f"{title}:"]
        lines += ["  " + line for line in table(["store", "object", "files", "size", *last], shown, right=[2, 3])]
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "dry_run": self.dry_run,
            "grace_seconds": self.grace,
            "objects": self.count,
            "files": self.files,
            "bytes": self.bytes,
            "kept": dict(sorted(self.reasons.items())),
            "deleted_files": self.deleted,
            "freed_bytes": self.freed_bytes,
            "errors": self.errors,
            "stores": self.stores,
            "notes": list(self.notes),
            "sections": [s.as_dict() for s in self.sections],
        }


def _by_column(item: tuple[str, int]) -> int:
    """The order reasons are told in: the table's columns, left to right."""
    order = [REFERENCED, LEASED, YOUNG, OUTSIDE, NOT_COLLECTED, UNDATED]
    return order.index(item[0]) if item[0] in order else len(order)


def _files_text(files: list[StoredFile] | None) -> str:
    return "-" if files is None else count(len(files), "file")


def _age_text(files: list[StoredFile]) -> str:
    times = [f.mtime for f in files if f.mtime is not None]
    return utc(min(times)) if times else "-"


def outside_report(survey: StoreSurvey, store: str, spec: dict[str, Any], collected: Iterable[str]) -> SectionReport:
    """What the survey found that belongs to no section of the collected schemas: kept, with the reason.

    Only names one level deep are known (the folders are not listed further), so a
    folder is reported as one object without a file count.
    """
    collected = set(collected)
    prefixes = section_prefixes(spec)
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
