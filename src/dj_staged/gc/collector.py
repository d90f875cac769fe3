"""One collection of a schema's sections in a store, by the writer–collector protocol.

The collector's steps, in order (``docs/spec.md`` says why no interleaving with
a writer loses a committed row):

1. **list** every section (``_schema/``, ``_hash/``, ``_staging/``, leases) and,
   where the store can list them, its incomplete uploads (S3 multipart uploads,
   Azure blobs of uncommitted blocks); nothing is decided yet;
2. take the schema's **gate** exclusively (writers hold it shared while they
   add a path to a lease), then **read the leases**: live ones are those whose
   lock some database session holds;
3. **read the references** of every row of the schema, strictly;
4. **delete** what no row references and no live lease covers, and, when no
   lease names it at all, what is older than the grace period; then release
   the gate. Outside the sections, only what an abandoned write placed at a
   path it chose (``<filepath@>``) is looked at: it is deleted when no live
   lease covers it, no row of any schema references it, and it still carries
   the mark the lease recorded for it. The gate is confirmed before each deletion request: one object's
   file at a time, or as many as the store deletes in one request (up to 1,000
   keys in one ``DeleteObjects`` on S3).

A dry run does steps 1 to 3 without the gate and deletes nothing. Each section
is listed once in step 1 (the leases once more in step 2, inside the gate), and
its incomplete uploads once: at most two listings per prefix.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from .. import steps
from .._datajoint import Config, Connection, Schema, config_of, is_covered, is_hash_name, schema_on
from ..leases import LeaseRecord, covers, exclusive_gate, held_lease_keys, scan_leases
from ..leases.locks import Gate
from ..references import referenced_paths, referencing_anywhere
from ..settings import resume_window as resume_window_setting
from ..stores import IncompleteUpload, StagedStore, StoredFile, resolve_store
from ..stores.base import mtime_of
from .policy import (
    LEASED,
    REFERENCED,
    REPLACED,
    RESUMABLE,
    YOUNG,
    Rules,
    classify,
    lease_root,
    schema_root,
    staging_root,
)
from .report import Report, SectionReport, outside_report
from .sections import (
    HASH,
    LEASES,
    PLACEMENTS,
    SCHEMA,
    STAGING,
    UPLOADS,
    StoreSurvey,
    check_layout,
    section_roots,
    survey_store,
)

DEFAULT_GRACE = timedelta(hours=24)

logger = logging.getLogger(__name__)


def collect(
    *schemas: Schema,
    store: str | None = None,
    grace: timedelta | float = DEFAULT_GRACE,
    dry_run: bool = True,
    now: float | None = None,
    config: Config | None = None,
    datajoint: bool = True,
    survey: StoreSurvey | bool = False,
    resume_window: timedelta | float | None = None,
) -> Report:
    """Report (and with ``dry_run=False`` delete) what no row references and no staged write still needs.

    ``datajoint=True`` covers DataJoint's ``_schema/`` and ``_hash/`` sections
    as well as ``_staging/``; ``datajoint=False`` only ``_staging/`` and its leases.
    ``now`` (POSIX seconds) replaces the clock for the age test only.
    ``survey=True`` (or a :class:`~dj_staged.gc.sections.StoreSurvey` of the
    store) adds an ``outside`` section: what lies outside the collected
    schemas' sections, one level deep, kept with its reason.
    ``resume_window`` (default ``DJ_STAGED_RESUME_WINDOW``, else the grace
    period): an interrupted ``resume=True`` write whose last durable byte is
    younger than this is kept for the attempt that resumes it.
    """
    if not schemas:
        raise ValueError("collect() needs at least one schema")
    config = config if config is not None else config_of(schemas[0].connection)
    grace_seconds = grace.total_seconds() if isinstance(grace, timedelta) else float(grace)
    staged_store = resolve_store(store, config)
    spec = staged_store.spec
    check_layout(spec, [schema.database for schema in schemas])
    store_name = staged_store.name
    clock = time.time() if now is None else now
    cutoff = clock - grace_seconds
    if resume_window is None:
        window = resume_window_setting(grace_seconds)
    else:
        window = resume_window.total_seconds() if isinstance(resume_window, timedelta) else float(resume_window)
    resume_cutoff = clock - window
    report = Report(dry_run=dry_run, grace=grace_seconds, looked_at=[store_name])
    if staged_store.reclaims_by_itself:
        report.notes.append(f"store {store_name}: the service reclaims by itself: {staged_store.reclaims_by_itself}")
    for schema in schemas:
        started = time.perf_counter()
        collection = _Collection(schema, staged_store, cutoff, datajoint, resume_cutoff)
        sections = collection.run(dry_run)
        report.sections.extend(sections)
        logger.info(
            "%s %s in store %s: %d objects collectable, %d kept, %d referenced, in %.2f s",
            "Collected" if not dry_run else "Looked at",
            schema.database,
            store_name,
            sum(s.count for s in sections),
            sum(len(s.protected) for s in sections),
            sum(s.referenced for s in sections),
            time.perf_counter() - started,
        )
    if survey is True:
        survey = survey_store(staged_store)
    if survey:
        report.sections.append(outside_report(survey, store_name, spec, [schema.database for schema in schemas]))
    return report


def collect_staging(*schemas: Schema, **options: Any) -> Report:
    """Only dj-staged's sections: ``_staging/{schema}/`` and its leases."""
    return collect(*schemas, datajoint=False, **options)


class _Collection:
    """The collection of one schema in one store."""

    def __init__(
        self, schema: Schema, store: StagedStore, cutoff: float, datajoint: bool, resume_cutoff: float | None = None
    ) -> None:
        self.schema = schema
        self.resume_cutoff = cutoff if resume_cutoff is None else resume_cutoff
        self.name = schema.database
        self.staged_store = store
        self.spec = store.spec
        self.store = store.name
        self.cutoff = cutoff
        self.roots = section_roots(self.spec, self.name)
        self.sections = [SCHEMA, HASH, STAGING, LEASES] if datajoint else [STAGING, LEASES]
        self._marks: dict[str, str] = {}  # path -> mark, of what abandoned writes placed at paths they chose

    def run(self, dry_run: bool) -> list[SectionReport]:
        listed = {section: self.staged_store.list_files(self.roots[section]) for section in self.sections}
        uploads: dict[str, IncompleteUpload] = {}
        if self.staged_store.supports_listing_incomplete_uploads:
            for section in self.sections:
                if section != LEASES:
                    uploads.update(self.staged_store.incomplete_uploads(self.roots[section]))
        steps.reach("collector.list", schema=self.name, store=self.store)
        window = contextlib.nullcontext(None) if dry_run else exclusive_gate(self.schema.connection, self.name)
        with window as gate:
            # inside the window every query runs on the gate's own session: a writer waiting for the gate
            # may hold this process's main connection
            schema = self.schema if gate is None else _on(gate.connection, self.schema)
            records = scan_leases(self.staged_store, self.name)
            held = held_lease_keys(schema.connection)
            live = [p for r in records if r.readable and r.lock in held for p in r.paths]
            kept = {r.lease_id for r in records if self._resumable(r, held)}
            resumable = [p for r in records if r.lease_id in kept for p in r.paths]
            dead = [p for r in records if r.readable and r.lock not in held and r.lease_id not in kept for p in r.paths]
            steps.reach("collector.read_leases", schema=self.name, live=live, dead=dead, resumable=resumable)
            referenced = referenced_paths([schema])
            steps.reach("collector.read_references", schema=self.name, referenced=len(referenced))
            rules = Rules(self._referenced(referenced), live, dead, 0, resumable)
            reports = self._judge(listed, uploads, records, held, rules)
            placements = self._placements(schema.connection, [r for r in records if r.lease_id not in kept], held, live)
            if placements is not None:
                reports.insert(-1, placements)
            if gate is not None:
                steps.reach("collector.delete", schema=self.name, paths=[p for r in reports for p in r.paths])
                self._delete(reports, uploads, gate)
        return reports

    def _resumable(self, record: LeaseRecord, held: set[int]) -> bool:
        """Whether ``record`` is an interrupted resumable write within its resume window (kept for its resumer)."""
        if not record.readable or record.lock in held or not record.resumable or record.abandoned:
            return False
        last = record.newest if record.newest is not None else record.started
        return last > self.resume_cutoff

    def _referenced(self, referenced: set[str]) -> Callable[[str, list[StoredFile]], bool]:
        def check(root: str, members: list[StoredFile]) -> bool:
            return root in referenced or any(is_covered(m.path, referenced) for m in members)

        return check

    def _judge(
        self,
        listed: dict[str, dict[str, StoredFile]],
        uploads: dict[str, IncompleteUpload],
        records: list[LeaseRecord],
        held: set[int],
        rules: Rules,
    ) -> list[SectionReport]:
        rules.cutoff = self.cutoff
        prefix = self.spec["schema_prefix"].strip("/")
        roots: dict[str, Callable[[str], str]] = {
            SCHEMA: lambda p: schema_root(p, prefix),
            HASH: lambda p: p,
            STAGING: staging_root,
        }
        reports = []
        for section in self.sections:
            if section == LEASES:
                continue
            files = list(listed[section].values())
            if section == HASH:
                files = [f for f in files if is_hash_name(f.path.rsplit("/", 1)[-1])]
            decision = classify(files, roots[section], rules)
            report = SectionReport(self.store, self.name, section, decision.collectable, decision.protected)
            report.kept = dict(decision.kept)
            report.referenced = decision.referenced
            report.referenced_files = decision.referenced_files
            report.referenced_bytes = decision.referenced_bytes
            report.abandoned = set(decision.abandoned)
            reports.append(report)
        if self.staged_store.supports_listing_incomplete_uploads:
            reports.append(self._uploads(uploads, rules, roots))
        reports.append(self._leases(listed[LEASES], records, held))
        return reports

    def _uploads(
        self, uploads: dict[str, IncompleteUpload], rules: Rules, roots: dict[str, Callable[[str], str]]
    ) -> SectionReport:
        """Incomplete uploads, judged by the path they would create, as an object there would be.

        An upload listed in step 1 may have been completed since, and a row
        committed that references it, its lease released before step 2: the
        references of step 3 then name its path, and it is kept (on Azure,
        aborting an upload deletes the blob, completed or not).
        """
        report = SectionReport(self.store, self.name, UPLOADS)
        for name, upload in sorted(uploads.items()):
            files = [StoredFile(name, upload.size, upload.started)]
            section = next((s for s, top in self.roots.items() if upload.path.startswith(top.rstrip("/") + "/")), None)
            root = roots[section](upload.path) if section in roots else upload.path
            if rules.referenced(root, [StoredFile(upload.path, upload.size, upload.started)]):
                report.protected[name] = REFERENCED
                report.kept[name] = files
            elif covers(rules.live, upload.path):
                report.protected[name] = LEASED
                report.kept[name] = files
            elif covers(rules.resumable, upload.path):
                report.protected[name] = RESUMABLE
                report.kept[name] = files
            elif covers(rules.dead, upload.path):
                report.collectable[name] = files
                report.abandoned.add(name)
            elif upload.started is not None and upload.started <= rules.cutoff:
                report.collectable[name] = files
            else:
                report.protected[name] = YOUNG
                report.kept[name] = files
        return report

    def _placements(
        self, connection: Connection, records: list[LeaseRecord], held: set[int], live: list[str]
    ) -> SectionReport | None:
        """What abandoned writes placed at paths they chose: collectable when no live lease covers it, no row of
        any schema references it, and it still carries the mark its lease recorded (else it is not theirs);
        None when no abandoned write's lease names such a path."""
        report = SectionReport(self.store, self.name, PLACEMENTS)
        dead = [record for record in records if record.readable and record.lock not in held]
        marks = {path: mark for record in dead for path, mark in record.placements.items()}
        self._marks = marks
        if not marks:
            return None
        referenced = referencing_anywhere(connection, marks)
        for path, mark in sorted(marks.items()):
            info = self.staged_store.info(path)
            if info is None:
                continue
            files = self._files_of(path, info)
            if path.lstrip("/") in referenced:
                report.referenced += 1
                report.referenced_files += len(files)
                report.referenced_bytes += sum(f.size for f in files)
                continue
            if covers(live, path):
                report.protected[path] = LEASED
            elif not self.staged_store.placed_by(path, mark):
                report.protected[path] = REPLACED
            else:
                report.collectable[path] = files
                report.abandoned.add(path)
                continue
            report.kept[path] = files
        return report

    def _files_of(self, path: str, info: dict[str, Any]) -> list[StoredFile]:
        if info["type"] == "directory":
            return list(self.staged_store.list_files(path).values())
        return [StoredFile(path, int(info.get("size") or 0), mtime_of(info))]

    def _leases(self, files: dict[str, StoredFile], records: list[LeaseRecord], held: set[int]) -> SectionReport:
        """Live leases are kept (a header being written too: its id names its lock); dead and unreadable ones
        are collected (their paths are judged above)."""
        report = SectionReport(self.store, self.name, LEASES)
        live = {r.root for r in records if r.lock in held}
        resumable = {r.root for r in records if self._resumable(r, held)}
        for path, stored in sorted(files.items()):
            root = lease_root(path)
            if root in live or root in resumable:
                report.protected[root] = LEASED if root in live else RESUMABLE
                kept = report.kept.get(root) or []
                report.kept[root] = [*kept, stored]
            else:
                report.collectable.setdefault(root, []).append(stored)
        return report

    def _delete(self, reports: list[SectionReport], uploads: dict[str, IncompleteUpload], gate: Gate) -> None:
        """Delete what the reports list, confirming the gate is still held before each deletion request."""
        failed = False
        for entry in sorted(reports, key=lambda r: r.section == LEASES):  # leases last: their paths first
            if entry.section == LEASES and failed:
                entry.errors.append(
                    "leases of abandoned writes kept: some of the objects they name could not be deleted"
                )
                continue
            if entry.section == PLACEMENTS:
                failed = self._delete_placements(entry, gate) or failed
                continue
            if self.staged_store.delete_batch_size > 1 and entry.section != UPLOADS:
                failed = self._delete_in_batches(entry, gate) or failed
                continue
            stop_at = self.roots.get(entry.section, "")
            for files in entry.collectable.values():
                gate.confirm()
                for stored in files:
                    try:
                        if entry.section == UPLOADS:
                            self.staged_store.abort_upload(uploads[stored.path])
                        else:
                            self.staged_store.delete_file(stored.path, stop_at)
                    except FileNotFoundError:
                        continue
                    except Exception as error:
                        failed = True
                        entry.errors.append(f"could not delete {stored.path}: {type(error).__name__}: {error}")
                        continue
                    entry.deleted += 1
                    entry.freed_bytes += stored.size

    def _delete_placements(self, entry: SectionReport, gate: Gate) -> bool:
        """Remove each placement whole, once more confirming it carries its mark (else it is kept); whether any
        removal failed."""
        failed = False
        for path, files in list(entry.collectable.items()):
            gate.confirm()
            try:
                if not self.staged_store.placed_by(path, self._marks[path]):
                    del entry.collectable[path]
                    entry.abandoned.discard(path)
                    entry.protected[path], entry.kept[path] = REPLACED, files
                    continue
                self.staged_store.remove(path)
            except Exception as error:
                failed = True
                entry.errors.append(f"could not delete {path}: {type(error).__name__}: {error}")
                continue
            entry.deleted += len(files)
            entry.freed_bytes += sum(f.size for f in files)
        return failed

    def _delete_in_batches(self, entry: SectionReport, gate: Gate) -> bool:
        """Delete a section's objects as many per request as the store takes; return whether any failed."""
        files = [stored for group in entry.collectable.values() for stored in group]
        failed = False
        size = self.staged_store.delete_batch_size
        for start in range(0, len(files), size):
            batch = files[start : start + size]
            gate.confirm()
            try:
                errors = self.staged_store.delete_many([stored.path for stored in batch])
            except Exception as error:
                errors = {stored.path: f"{type(error).__name__}: {error}" for stored in batch}
            for stored in batch:
                if stored.path in errors:
                    failed = True
                    entry.errors.append(f"could not delete {stored.path}: {errors[stored.path]}")
                else:
                    entry.deleted += 1
                    entry.freed_bytes += stored.size
        return failed


def _on(connection: Connection, schema: Schema) -> Schema:
    """The same schema, reached through ``connection``."""
    return schema_on(connection, schema.database)
