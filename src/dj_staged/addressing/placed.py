"""Placed lifecycle: write under ``_staging/``, then place the object at the path the writer chose.

For a codec whose value is a path the writer picks (``<filepath@>``:
``subject01/session001/data.bin``). The first handle checks the path (the
codec's own rules, then ours: relative, no ``..``, not in dj-staged's
``_staging/``), claims it for this writer alone (a second writer asking for it
is refused with :class:`~dj_staged.errors.PathTakenError`), and refuses a path
that already holds something unless the writer passed ``overwrite=True`` and no
row references it. The bytes go to ``_staging/{schema}/{table}/{field}_{token}{ext}``
under the lease, as a schema-addressed object's go to its path.

Finalization checks what was written (fencing), leases the chosen path with
the *mark* the placed objects will carry, places them there (a link or rename
on a local store, the service's copy on an object store), makes the new names
durable on a local store, and asks the codec for the column value of what is
now at the path. Cleanup removes the staging object and, once placed, what is
at the chosen path if it still carries this write's mark, then the folders the
placement made. A collector reclaims a placement whose writer died before its
commit only if no row references the path and what is there still carries the
mark (``docs/spec.md``, *Placement*); it never looks at anything else outside
DataJoint's and dj-staged's sections.

There is no deduplication: the chosen path is the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import steps
from .._datajoint import generate_token
from ..errors import HandleModeError, InvalidPathError, PathTakenError
from ..layout import STAGING_PREFIX
from ..protocol import StagedField
from ..references import referencing_anywhere
from .hashed import STAGING_TOKEN_LENGTH
from .paths import check_relative_path
from .schema import SchemaAddressedStaging, SchemaAddressedState, check_mode, inspect_written


@dataclass
class PlacedState(SchemaAddressedState):
    """What the placed lifecycle keeps for one field: the staging path (``path``) and the chosen one."""

    target: str = ""
    overwrite: bool = False
    mark: str | None = None
    folders: list[str] = field(default_factory=list)  # made for the placement, deepest first


def placed_state(field: StagedField) -> PlacedState:
    """The field's placed state (set by its first handle)."""
    return field.state_as(PlacedState)


class PlacedStaging(SchemaAddressedStaging):
    """Lifecycle mixin for codecs whose value is a path the writer chooses."""

    writer_chooses_path: ClassVar[bool] = True
    finalizes_cheaply: ClassVar[bool] = False  # a placement is a copy on an object store: check the row first

    def _check_target(self, field: StagedField, path: str) -> bool:
        """Codec hook: raise :class:`InvalidPathError` unless the codec's ``insert1`` takes a value at ``path``
        (its reserved sections, its prefix); whether something is at ``path`` now."""
        return field.store.exists(path)

    def _placed_value(self, field: StagedField, path: str) -> dict[str, Any]:
        """Codec hook: the column value for what is now at ``path``, as the codec's ``insert1`` makes it."""
        raise NotImplementedError

    def staged_handle(self, field: StagedField, *, mode: str, file_mode: str = "wb") -> Any:
        """Check and claim the chosen path on the field's first handle, then a handle on its staging object."""
        check_mode(self, field, mode)
        if field.state is None:
            field.state = self._start(field)
        return super().staged_handle(field, mode=mode, file_mode=file_mode)

    def _start(self, field: StagedField) -> PlacedState:
        target = check_chosen_path(field)
        taken = self._check_target(field, target)
        field.claim(target)
        if taken or field.store.exists(target):
            refuse_taken(field, target)
        staging = check_relative_path(
            field.name,
            f"{STAGING_PREFIX}/{field.schema}/{field.table_name}/"
            f"{field.name}_{generate_token(STAGING_TOKEN_LENGTH)}{field.ext or ''}",
        )
        field.lease(staging, fresh=True)
        return PlacedState(staging, target=target, overwrite=field.overwrite)

    def finalize_staged(self, field: StagedField) -> dict[str, Any]:
        """Check what was written, place it at the chosen path under the lease, return the codec's value."""
        state = placed_state(field)
        inspect_written(field)
        if field.store.exists(state.target):
            refuse_taken(field, state.target)  # appeared since the first handle, or now referenced
        state.mark = field.store.placement_mark(state.path, field.leases.lease_id)
        field.lease_placement(state.target, state.mark)
        with field.callback("placing", None) as callback:
            try:
                state.folders = field.store.place(
                    state.path, state.target, mark=state.mark, overwrite=state.overwrite, callback=callback
                )
            except FileExistsError:
                raise PathTakenError(
                    f"{field.label}: {state.target!r} in store '{field.store_name}' was created by someone else "
                    "while this write ran; nothing was inserted (pass overwrite=True to replace it)",
                    field=field.name,
                ) from None
        if field.fsyncs:
            field.sync.moved(field.full_path(state.path), field.full_path(state.target), field.full_path(""))
        steps.reach("writer.place", field=field.name, path=state.target)
        field.store.forget(state.target)
        return self._placed_value(field, state.target)

    def cleanup_staged(self, field: StagedField) -> None:
        """Remove the staging object and, once placed, what this write put at the chosen path (if still its)."""
        if field.state is None:
            return
        state = placed_state(field)
        field.store.remove(state.path)
        if state.mark is not None and field.store.placed_by(state.target, state.mark):
            field.store.remove(state.target)
            for folder in state.folders:
                field.store.remove_empty_folder(folder)


def check_chosen_path(field: StagedField) -> str:
    """The chosen path, if it is a plain relative path outside dj-staged's own section; else InvalidPathError."""
    path = field.target
    if not isinstance(path, str) or not path:
        raise HandleModeError(
            f"{field.label} takes a path you choose: staged.open('{field.name}', path='subject01/data.bin')",
            field=field.name,
        )
    if path.startswith("/"):
        raise InvalidPathError(
            f"{field.label}: {path!r} is absolute; give a path relative to the store's location",
            field=field.name,
        )
    check_relative_path(field.name, path)
    if path == STAGING_PREFIX or path.startswith(STAGING_PREFIX + "/"):
        raise InvalidPathError(
            f"{field.label}: {path!r} is in dj-staged's section '{STAGING_PREFIX}/' of the store; choose another path",
            field=field.name,
        )
    return path


def refuse_taken(field: StagedField, path: str) -> None:
    """Raise :class:`PathTakenError` unless the writer may replace what is at ``path``: ``overwrite=True``, and
    no row of any schema references it (replacing it would change that row's data)."""
    rows = referencing_anywhere(field.table.connection, [path]).get(path.lstrip("/"))
    if rows:
        raise PathTakenError(
            f"{field.label}: {path!r} in store '{field.store_name}' is referenced by a row of "
            f"{', '.join(sorted(rows))}; a staged insert never replaces another row's file (choose another path)",
            field=field.name,
        )
    if not field.overwrite:
        raise PathTakenError(
            f"{field.label}: {path!r} in store '{field.store_name}' already holds a file; choose another path, or "
            "pass overwrite=True to replace it (no row references it)",
            field=field.name,
        )
