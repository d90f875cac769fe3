"""The row a staged block drafts: its fields and their participants, its lease, its phase, its checks.

A :class:`RowDraft` is what the lifecycle and a batch work with; the caller
works with its façade, :class:`~dj_staged.session.session.StagedSession`.
Everything codec-specific is delegated to the field's participant (see
:mod:`dj_staged.protocol`), which receives a typed
:class:`~dj_staged.protocol.StagedField` per field.

Before the first byte is written, the first handle refuses what the insert
would refuse for certain: an auto-populated table outside its ``make()``, and
a primary key already in the table (a batch's later row: by its exit, see
:mod:`dj_staged.session.keys`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any, cast

import fsspec

from .. import steps
from .._datajoint import Attribute, Config, Table, config_of, inserts_allowed
from ..addressing.paths import check_extension, check_filename, check_key
from ..durability import SyncPlan, durable
from ..errors import (
    AutoPopulatedInsertError,
    DuplicateError,
    HandleModeError,
    IgnoredValueWarning,
    NotParticipatingError,
    StagedInsertError,
    codec_label,
    empty_store_name,
    missing_primary_key,
    warn,
)
from ..leases import LeaseKeeper, reclaim
from ..progress import progress_callback
from ..protocol import (
    Abortable,
    FileHandle,
    HandleMode,
    HandleOptions,
    StagedField,
    StagedParticipant,
    StagingState,
    ThreadOwner,
    participant_for,
)
from ..stores import StagedStore, resolve_store
from .keys import KeyLookout, key_in_table
from .rows import Trials, check_locally, check_row, key_probe, key_token

logger = logging.getLogger(__name__)


class Phase(enum.Enum):
    """Where a row is in its lifecycle."""

    DRAFTING = "drafting"  # the caller's block: handles are given out
    FINALIZING = "finalizing"  # the block ended cleanly: handles sealed, values computed
    UNWINDING = "unwinding"  # the block failed: what was staged is removed
    CLOSED = "closed"  # the block is over


AUTO_POPULATED_REFUSAL = (
    "Inserts into an auto-populated table can only be done inside its make method during a populate call. "
    "To override, set keyword argument allow_direct_insert=True."
)


class RowDraft:
    """One row while it is drafted, finalized, committed or unwound: its fields, its lease, its phase.

    The block's façade (:class:`~dj_staged.session.session.StagedSession`)
    gives the caller ``rec``, ``store()``, ``open()`` and ``set_filename()``;
    the lifecycle and a batch call :meth:`finalize`, :meth:`unwind` and
    :meth:`close`; codec helpers (``open_blob_array``, ``create_zarr_array``)
    call :meth:`handle` with what the writer declared.
    """

    def __init__(
        self,
        table: Table,
        *,
        leases: LeaseKeeper | None = None,
        on_key: Callable[[dict[str, Any]], None] | None = None,
        allow_direct_insert: bool = False,
        stores: dict[str | None, StagedStore] | None = None,
        trials: Trials | None = None,
        lookout: KeyLookout | None = None,
        resume: bool = False,
    ) -> None:
        self._table = table
        self.resume = resume  # resumable: its fields checkpoint, and go on from what an earlier attempt left
        self._stores = stores if stores is not None else {}  # resolved stores, shared by a batch's rows
        self._trials = trials if trials is not None else Trials()  # the checks' table copies, a batch's shared
        self._key_columns = self._trials.key_columns(table)
        self._key_names = [name for name, _attribute in self._key_columns]
        self._rec: dict[str, Any] = {}
        self._fields: dict[str, StagedField] = {}
        self._opened: list[ThreadOwner] = []  # every handle with threads, so no thread of one outlives the block
        self._filenames: dict[str, str] = {}
        self._leases = (
            leases
            if leases is not None
            else LeaseKeeper(table.connection, table.database, table.table_name, resumable=resume)
        )
        self._on_key = on_key
        self._lookout = lookout  # a batch's: its later rows' keys are looked up while they write
        self.announced_key: dict[str, Any] | None = None  # the key told to the owning batch
        self._key_checked = False  # refused before the first byte, or asked of the lookout
        self._key_asked = False  # the lookout's answer is read at the row's exit
        self.allow_direct_insert = allow_direct_insert
        self.sync = SyncPlan(durable())  # what must be on disk before this row commits
        self.phase = Phase.DRAFTING
        self.committed = False  # the row is visible, or the enclosing transaction took it

    @property
    def table(self) -> Table:
        """The table the row goes into."""
        return self._table

    @property
    def rec(self) -> dict[str, Any]:
        """Record dict for setting attribute values (primary key first)."""
        return self._rec

    @property
    def leases(self) -> LeaseKeeper:
        """The lease protecting what this block writes."""
        return self._leases

    @property
    def primary_key(self) -> dict[str, Any]:
        """The primary key set so far on ``rec``; raises if any attribute is missing."""
        names = self._key_names
        key = {k: self._rec[k] for k in names if k in self._rec}
        if len(key) != len(names):
            raise missing_primary_key(set(names) - set(key))
        return key

    @property
    def staged_fields(self) -> list[str]:
        """Fields written through ``store()``/``open()`` so far, in order of first use."""
        return list(self._fields)

    def field(self, name: str) -> StagedField:
        """The staged field ``name`` (what its codec was given), once claimed through ``store()``/``open()``."""
        try:
            return self._fields[name]
        except KeyError:
            raise StagedInsertError(f"Field '{name}' has not been staged in this block", field=name) from None

    def filename(self, field: str) -> str | None:
        """The filename given with :meth:`set_filename`, if any."""
        return self._filenames.get(field)

    def set_filename(self, field: str, filename: str) -> None:
        """Name the file an attachment (``<attach@>``) field holds; before or after ``open()``."""
        self.require_open()
        attr = self._attribute(field)
        participant = participant_for(attr.codec) if attr.codec is not None else None
        if participant is None or not participant.accepts_filename:
            codec = codec_label(attr.codec) if attr.codec is not None else attr.type
            raise HandleModeError(
                f"Field '{field}' ({codec}) does not take a filename; set_filename is for <attach@>", field=field
            )
        self._filenames[field] = check_filename(field, filename)
        if field in self._fields:
            self._fields[field].filename = self._filenames[field]

    def handle(
        self,
        field: str,
        ext: str,
        *,
        mode: HandleMode,
        file_mode: str = "wb",
        size: int | None = None,
        options: HandleOptions | None = None,
        path: str | None = None,
        overwrite: bool = False,
    ) -> fsspec.FSMap | FileHandle:
        """A write handle on ``field`` from its participant (``mode`` ``"store"`` or ``"open"``), the field claimed
        on its first use; ``options``: what the writer declared about the content (a codec helper's); ``path``
        and ``overwrite``: where a participant that lets the writer choose it places the value."""
        self.require_open()
        new = field not in self._fields
        staged = self._claim(field, ext, path, overwrite)
        if size is not None:
            staged.size = size
        if options is not None:
            staged.options = options
        try:
            handle = staged.participant.staged_handle(staged, mode=mode, file_mode=file_mode)
        except BaseException:
            if new:  # the field stages nothing; remove what the failed handle may have created
                try:
                    staged.participant.cleanup_staged(staged)
                except Exception:
                    logger.warning("Cleanup after a failed handle for '%s' failed", field, exc_info=True)
                del self._fields[field]
            raise
        if not isinstance(handle, fsspec.FSMap):  # a file: closed at finalization (a map is sealed instead)
            staged.handles.append(handle)
        if hasattr(handle, "stop_threads"):  # a ThreadOwner (isinstance on a protocol costs ~50 us a row)
            self._opened.append(cast(ThreadOwner, handle))
        steps.reach("writer.write", field=field, mode=mode)
        return handle

    def _claim(self, field: str, ext: str, path: str | None = None, overwrite: bool = False) -> StagedField:
        """Resolve ``field`` on its first use; check consistency on later ones."""
        if field in self._fields:
            staged = self._fields[field]
            if check_extension(field, ext) != staged.ext:
                raise HandleModeError(
                    f"Field '{field}' was already staged with extension {staged.ext!r}; "
                    f"a second handle must use the same extension, not {ext!r}",
                    field=field,
                )
            if (path, overwrite) != (staged.target, staged.overwrite):
                raise HandleModeError(
                    f"Field '{field}' was already staged with path={staged.target!r}, overwrite={staged.overwrite}; "
                    "a second handle must ask for the same",
                    field=field,
                )
            return staged
        attr = self._attribute(field)
        participant = self._participant(field, attr)
        if attr.store == "" and not participant.resolves_empty_store_name:
            raise empty_store_name(field, attr.codec, self.config.stores)  # as the codec's own insert1 refuses it
        primary_key = self.primary_key
        check_path_wanted(field, attr, participant, ext, path, overwrite)
        extension = check_extension(field, ext)
        check_key(field, primary_key)
        if self.resume:
            check_resumable(field, attr, participant)
        self._refuse_early(primary_key)
        staged = StagedField(
            name=field,
            codec=attr.codec,
            participant=participant,
            table=self._table,
            store=self._resolve_store(field, attr),
            ext=extension,
            ext_given=ext or None,
            primary_key=primary_key,
            leases=self._leases,
            sync=self.sync,
            progress=progress_callback,
            filename=self._filenames.get(field),
            target=path,
            overwrite=overwrite,
        )
        if self.resume:
            self._take_over(staged)
        self._fields[field] = staged
        return staged

    def _take_over(self, staged: StagedField) -> None:
        """Hold the field's resume key, and take over what earlier attempts of the row left in its store."""
        if not staged.store.resumes_writes:
            raise StagedInsertError(
                f"{staged.label}: store '{staged.store_name}' cannot resume a write; stage it without resume=True",
                field=staged.name,
            )
        self._leases.claim_resume(staged.store, staged.primary_key, staged.name)
        staged.resumable = True
        staged.resume = self._leases.take_over(staged.store, staged.primary_key).get(staged.name)

    def _refuse_early(self, key: dict[str, Any]) -> None:
        """Before the first byte: refuse what the insert would refuse whatever is written.

        A key used twice in a batch is refused without a round trip. A key
        already in the table is refused here in the round trip that takes the
        lease lock (a single row, a batch's first row), or looked up on the
        batch's second session while the row writes, its answer read at the
        row's exit (a batch's later rows).
        """
        if self._key_checked:
            return
        if not self.allow_direct_insert and not inserts_allowed(self._table):
            raise AutoPopulatedInsertError(AUTO_POPULATED_REFUSAL)
        self._announce_key(key)
        if self._lookout is not None and self._leases.lock is not None:
            self._key_asked = self._lookout.ask(key)
            if not self._key_asked and key_in_table(self._table, key):
                raise self._duplicate(key)
        elif self._leases.take(key_probe(self._table, key, self._key_columns)):  # the lease lock, the key check
            raise self._duplicate(key)
        self._key_checked = True

    def _refuse_taken_key(self, key: dict[str, Any]) -> None:
        """At a batch row's exit: refuse its key if its lookup found it, or (a row that staged nothing) if it is in
        the table now."""
        if self._key_asked:
            self._key_asked = False
            assert self._lookout is not None
            if self._lookout.found(key):
                raise self._duplicate(key)
        elif not self._key_checked and key_in_table(self._table, key):
            raise self._duplicate(key)

    def _duplicate(self, key: dict[str, Any]) -> DuplicateError:
        return DuplicateError(
            f"Duplicate entry: {key} is already in {self._table.full_table_name}; "
            "a staged insert needs a primary key that is not in the table yet"
        )

    def _attribute(self, field: str) -> Attribute:
        attribute = self._trials.heading(self._table).get(field)
        if attribute is None:
            raise NotParticipatingError(f"Attribute '{field}' not found in table heading", field=field)
        return attribute

    @staticmethod
    def _participant(field: str, attr: Attribute) -> StagedParticipant:
        codec = attr.codec
        if codec is None:
            raise NotParticipatingError(
                f"Attribute '{field}' ({attr.type}) is not an object-store codec field; "
                "set its value on staged.rec instead of using store()/open()",
                field=field,
            )
        if attr.store is None:
            raise NotParticipatingError(
                f"Attribute '{field}' (<{codec.name}>) is stored in the table, not in an object store; "
                f"declare it <{codec.name}@> or <{codec.name}@store> to stage it, or set its value on staged.rec",
                field=field,
            )
        participant = participant_for(codec)
        if participant is None:
            owner = type(codec).__module__.split(".", 1)[0]
            raise NotParticipatingError(
                f"Codec <{codec.name}> ({owner}.{type(codec).__qualname__}) of attribute '{field}' does not support "
                "staged insert: it implements none of staged_handle/finalize_staged/cleanup_staged and no adapter "
                "is registered for it. Set the value on staged.rec (ordinary insert), or give it staged support "
                "with dj_staged.register_adapter(CodecClass, adapter) (see docs/codec-authors.md).",
                field=field,
            )
        return participant

    def _resolve_store(self, field: str, attr: Attribute) -> StagedStore:
        # `<x@>` reaches here only for a codec whose own insert1 reads it as
        # stores.default (`resolves_empty_store_name`): resolve it to that store's name.
        requested = attr.store or None
        store = self._stores.get(requested)
        if store is None:
            store = self._stores[requested] = resolve_store(requested, self.config, field=field)
        return store

    @property
    def config(self) -> Config:
        """DataJoint's configuration of the table's connection."""
        return config_of(self._table.connection)

    def require_open(self) -> None:
        """Raise unless the block is still drafting (handles and filenames are given out only inside it)."""
        if self.phase is not Phase.DRAFTING:
            raise HandleModeError(
                f"This staged insert is {self.phase.value}: store(), open() and set_filename() work only inside its "
                "block"
            )

    def _announce_key(self, key: dict[str, Any]) -> None:
        """Tell the owner (a batch) the row's key once, before any of its bytes are written."""
        if self._on_key is not None and self.announced_key is None:
            self._on_key(key)
            self.announced_key = dict(key)

    def key_token(self) -> tuple[Any, ...]:
        """The row's primary key as the table types it."""
        return key_token(self._key_columns, self.primary_key)

    def finalize(self) -> tuple[dict[str, Any], set[str]]:
        """Seal and close the handles, check the row, build each staged column value; the row and its staged
        fields."""
        self.phase = Phase.FINALIZING
        self._seal()
        if self._on_key is not None:
            self._announce_key(self.primary_key)
        self._close_handles()
        for name, staged in self._fields.items():
            current = {k: self._rec.get(k) for k in staged.primary_key}
            if current != staged.primary_key:
                raise StagedInsertError(
                    f"The primary key changed after store()/open() for field '{name}' "
                    f"({staged.primary_key} → {current}); set the whole key before asking for a handle",
                    field=name,
                )
        row = dict(self._rec)
        for name in self._fields:
            if name in row:
                warn(
                    f"staged.rec['{name}'] is ignored: the field was written through store()/open(), "
                    "and its value is computed from what was written",
                    IgnoredValueWarning,
                )
                del row[name]
        options: dict[str, Any] = {"allow_direct_insert": self.allow_direct_insert, "trials": self._trials}
        if self._on_key is not None:  # a batch's row: what needs no server now, its key's lookup last
            check_locally(self._table, row, self._fields, **options)
            self._refuse_taken_key(self.primary_key)
        elif self._check_before_finalizing():
            check_row(self._table, row, self._fields, **options)
        finalized = {name: staged.participant.finalize_staged(staged) for name, staged in self._fields.items()}
        for name, value in finalized.items():
            path = value.get("path") if isinstance(value, dict) else None
            staged = self._fields[name]
            if path is not None and not staged.is_leased(path):
                staged.lease(path)  # a codec that returned a path it did not lease: protect it until the commit
        row.update(finalized)
        return row, set(finalized)

    def _check_before_finalizing(self) -> bool:
        """Whether a single row is checked against the table (one round trip) before its fields are finalized.

        The check refuses a bad row before finalization promotes or re-hashes
        content. A row whose fields are all schema-addressed has nothing
        costly to finalize: its ``INSERT``, right after, refuses it with the
        same error, and the block unwinds the same way.
        """
        return not all(staged.participant.finalizes_cheaply for staged in self._fields.values())

    def unwind(self) -> bool:
        """Unwinding: remove what every staged field wrote; never raise over the caller's error.

        Returns whether everything was removed; if not, the caller abandons the
        lease instead of releasing it, so the collector knows what is left.
        """
        self.phase = Phase.UNWINDING
        self._seal()
        self._close_handles(abort=True)
        clean = True
        for name, staged in self._fields.items():
            try:
                staged.participant.cleanup_staged(staged)
            except Exception:
                clean = False
                logger.warning("Cleanup of staged field '%s' failed; `dj-staged gc` reclaims it", name, exc_info=True)
        return self._reclaim() and clean

    def _reclaim(self) -> bool:
        """Remove the canonical objects the fields created, unless another row or writer uses them."""
        clean = True
        for staged in self._fields.values():
            if not staged.reclaims:
                continue
            try:
                reclaim(
                    self._table.connection,
                    staged.store,
                    staged.schema,
                    staged.reclaims,
                    exclude_lease=self._leases.lease_id,
                )
            except Exception:
                clean = False
                logger.warning("Reclaiming %s failed; `dj-staged gc` reclaims them", staged.reclaims, exc_info=True)
            staged.reclaims.clear()
        return clean

    def suspend(self) -> None:
        """Interrupted with ``resume=True``: stop every handle where its durable prefix ends, record what the
        ``store()`` handles wrote last, and keep the lease's records for a later attempt (locks released)."""
        self.phase = Phase.UNWINDING
        self._seal()
        for staged in self._fields.values():
            for handle in staged.handles:
                suspend = getattr(handle, "suspend", None)
                if callable(suspend):
                    suspend()
            staged.handles.clear()
            checkpoints = getattr(staged.state, "checkpoints", None)
            if checkpoints is not None:
                try:
                    checkpoints.flush()
                except Exception:
                    logger.warning("Recording the last files of field '%s' failed", staged.name, exc_info=True)
        self._leases.suspend()

    def _close_handles(self, abort: bool = False) -> None:
        for staged in self._fields.values():
            for handle in staged.handles:
                if handle.closed:
                    continue
                try:
                    if abort and isinstance(handle, Abortable):
                        handle.abort()
                    else:
                        handle.close()
                except Exception:
                    if self.phase is not Phase.UNWINDING:
                        raise
                    logger.warning("Closing a handle of field '%s' failed", staged.name, exc_info=True)
            staged.handles.clear()

    def _seal(self) -> None:
        """The block has ended: its ``store()`` handles refuse writes from now on, wherever they are."""
        for staged in self._fields.values():
            try:
                staged.seal()
            except Exception:
                if self.phase is Phase.FINALIZING:
                    raise
                logger.warning("Sealing the handles of field '%s' failed", staged.name, exc_info=True)

    def close(self) -> None:
        """The block has ended: seal the handles, end their threads, keep only what cleanup may still need."""
        self.phase = Phase.CLOSED
        self._seal()
        for handle in self._opened:
            handle.stop_threads()
        self._opened.clear()  # a batch keeps its finished rows: only what unwinding needs stays in memory
        states = [staged.state for staged in self._fields.values() if isinstance(staged.state, StagingState)]
        for state in states:
            state.compact()
        for state in states:
            state.close()


def check_resumable(field: str, attr: Any, participant: StagedParticipant) -> None:
    """Refuse ``resume=True`` for a field whose participant cannot resume a write."""
    if not participant.supports_resume:
        raise StagedInsertError(
            f"Field '{field}' (<{attr.codec.name}>) cannot resume a write (its codec's participant does not "
            "support resume=True); stage it without resume=True",
            field=field,
        )


def check_path_wanted(
    field: str, attr: Any, participant: StagedParticipant, ext: str, path: str | None, overwrite: bool
) -> None:
    """Refuse ``path=``/``overwrite=`` for a field whose path DataJoint builds, and a missing ``path=`` (or an
    extension given beside it) for one whose path the writer chooses."""
    label = f"Field '{field}' (<{attr.codec.name}>)"
    if not participant.writer_chooses_path:
        if path is not None or overwrite:
            raise HandleModeError(
                f"{label}: path= and overwrite= are for <filepath@> fields; the path of this value is built from "
                "the row's key",
                field=field,
            )
        return
    if path is None:
        raise HandleModeError(
            f"{label} takes a path you choose: staged.open('{field}', path='subject01/data.bin') "
            f"(staged.store('{field}', path=...) for a folder)",
            field=field,
        )
    if ext:
        raise HandleModeError(f"{label}: give the extension as part of path=, not as ext={ext!r}", field=field)
    if not isinstance(overwrite, bool):
        raise HandleModeError(f"{label}: overwrite must be True or False, not {overwrite!r}", field=field)
