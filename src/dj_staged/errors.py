"""The errors a staged insert raises, as one tree: catch by class, never by wording.

::

    DataJointError                          (DataJoint's base class)
    ├── DuplicateError                      (DataJoint's: a key already in the table, or twice in one batch)
    └── StagedInsertError                   everything refused or failed by dj-staged
        ├── MissingPrimaryKeyError          store()/open() before the whole primary key is set
        ├── AutoPopulatedInsertError        a staged insert into an auto-populated table outside its make()
        ├── NotParticipatingError           the field's codec does not take part in staged insert
        ├── HandleModeError                 store() for a file value, open() for a directory, a read mode,
        │                                   a second handle for a one-sequence value, a closed session,
        │                                   a store() handle written after its block ended (sealed)
        ├── InvalidPathError (+ ValueError) an extension, filename, key or chosen path that is malformed or would
        │   │                               leave the field's location; an attachment without a filename
        │   └── PathTakenError              a <filepath@> path that holds a file, that a row references, or that
        │                                   another staged insert is writing
        ├── NothingWrittenError             a handle that received nothing a value can be made of
        ├── ContentError                    what was written does not make a valid value (bad .npy, wrong size)
        ├── IncompleteObjectError           fencing: an object the row would reference is missing or changed
        ├── LeaseLostError                  fencing: the write's lease lapsed, so the collector may have run
        ├── GateLostError                   a collector lost the schema's gate mid-collection and stopped deleting
        ├── ProtocolViolationError          a participant broke the protocol (its field's state is not its own)
        ├── UnsupportedBackendError         the database cannot hold leases (dj-staged needs PostgreSQL), or a
        │                                   store speaks a protocol dj-staged has no store for
        ├── ResumeKeyTakenError             another writer is resuming the same (schema, table, key, field)
        ├── DurablePrefixLostError          a resumed write's durable prefix is missing or changed (caught: the
        │                                   write starts over with a ResumeRestartedWarning)
        └── AmbiguousCommitError            the connection died during the commit and the outcome is unknown

Each error that concerns one field names it in ``.field``. Warnings a user may
want to act on are :class:`CommitRecoveredWarning` (the connection died after the
commit, and the row was found committed), :class:`IgnoredValueWarning` and
:class:`ResumeRestartedWarning` (a resumed write starts over from byte 0, and why).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import FrameType
from typing import Any

from datajoint.errors import DataJointError, DuplicateError

__all__ = [
    "AmbiguousCommitError",
    "AutoPopulatedInsertError",
    "CommitRecoveredWarning",
    "ContentError",
    "DataJointError",
    "DuplicateError",
    "HandleModeError",
    "IgnoredValueWarning",
    "IncompleteObjectError",
    "InvalidPathError",
    "GateLostError",
    "PathTakenError",
    "LeaseLostError",
    "MissingPrimaryKeyError",
    "NotParticipatingError",
    "NothingWrittenError",
    "ProtocolViolationError",
    "DurablePrefixLostError",
    "ResumeKeyTakenError",
    "ResumeRestartedWarning",
    "StagedInsertError",
    "UnsupportedBackendError",
]


class StagedInsertError(DataJointError):  # type: ignore[misc]  # DataJoint's error classes are untyped (Any)
    """Base class of every error dj-staged raises; ``field`` names the field concerned, if one is."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class AutoPopulatedInsertError(StagedInsertError):
    """A staged insert into an auto-populated table outside its ``make()``, without ``allow_direct_insert=True``;
    DataJoint's own insert refuses it with the same words."""


class MissingPrimaryKeyError(StagedInsertError):
    """``store()``/``open()`` was called before every primary-key attribute was set on ``staged.rec``."""


class NotParticipatingError(StagedInsertError):
    """The field is not an object-store field whose codec takes part in staged insert."""


class HandleModeError(StagedInsertError):
    """The handle asked for does not fit the field's value, or the session no longer gives handles."""


class InvalidPathError(StagedInsertError, ValueError):
    """An extension, filename or primary-key value that is malformed, missing where one is required (an
    attachment's filename), or would put an object outside the field's location."""


class PathTakenError(InvalidPathError):
    """A path the writer chose (``<filepath@>``) is not free: a file is there (pass ``overwrite=True`` to replace
    one no row references), a row references it, or another staged insert is writing it."""


class NothingWrittenError(StagedInsertError):
    """A handle was asked for but nothing a value can be made of was written through it."""


class ContentError(StagedInsertError):
    """What was written does not form a valid value for the codec (a bad ``.npy`` header, a size mismatch)."""


class IncompleteObjectError(StagedInsertError):
    """Fencing: an object the row would reference is missing, or differs from what was written through the handle."""


class LeaseLostError(StagedInsertError):
    """Fencing: the write's lease was not held continuously until the commit, so nothing is inserted."""


class ProtocolViolationError(StagedInsertError):
    """A participant broke the staged-insert protocol: it finalized or cleaned up a field whose state another
    participant set (a codec's bug, never the caller's)."""


class GateLostError(StagedInsertError):
    """A collector's session no longer holds the schema's gate (the session ended): it stops before deleting more."""


class UnsupportedBackendError(StagedInsertError):
    """The database cannot hold dj-staged's leases (advisory locks: it needs PostgreSQL), or a field's store speaks a
    protocol that dj-staged has no :class:`~dj_staged.stores.StagedStore` for."""


class ResumeKeyTakenError(StagedInsertError):
    """``resume=True``: another writer holds the resume key (schema, table, primary key, field); the message names
    it (host, process, database session). Neither writer loses a byte: wait for the other to end, or stop it."""


class DurablePrefixLostError(StagedInsertError):
    """A resumed write's durable prefix is missing or changed (collected, aborted, replaced, truncated); the message
    says why. The session catches it, warns with :class:`ResumeRestartedWarning` and writes from byte 0."""


class AmbiguousCommitError(StagedInsertError):
    """The connection died during the commit and it could not be found out whether the row exists.

    Every object is kept: if the row exists it references them, and if it does
    not, ``dj-staged gc`` reclaims them. ``keys`` lists the rows concerned.
    """

    def __init__(self, message: str, *, keys: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.keys = list(keys or [])


class CommitRecoveredWarning(UserWarning):
    """The connection died after the commit was sent; the row was looked up and found committed."""


class IgnoredValueWarning(UserWarning):
    """A value set on ``staged.rec`` for a field written through a handle is ignored."""


class ResumeRestartedWarning(UserWarning):
    """``resume=True``: what an earlier attempt left could not be resumed (its durable prefix is missing or
    changed, and the message says why), so the field is written from byte 0: ``f.tell()`` is 0."""


def storage_not_configured(
    field: str | None, requested: str | None, stores: Mapping[str, Any], cause: Exception
) -> StagedInsertError:
    """A store that is not configured, or cannot be used: which one, the stores that are configured, DataJoint's cause.

    ``requested`` is the store name of the field's type (``None`` for ``stores.default``);
    ``stores`` is DataJoint's ``config.stores``.
    """
    names = sorted(name for name, spec in stores.items() if isinstance(spec, dict))
    default = stores.get("default")
    asked = f"Store '{requested}'" if requested else "The default store (stores.default)"
    whose = f" of field '{field}'" if field else ""
    usable = (requested or default) in names
    problem = f"{asked}{whose} is {'configured but cannot be used' if usable else 'not configured'}"
    listed = ", ".join(names) if names else "none"
    listed += f" (stores.default: {default})" if isinstance(default, str) else " (no stores.default)"
    if usable:
        fix = ""
    elif requested:
        fix = f"; use one of them in the table definition, or add stores.{requested} to datajoint.json or DJ_STORES"
    else:
        fix = "; set stores.default to one of them in datajoint.json or DJ_STORES"
    return StagedInsertError(
        f"{problem}. Configured stores: {listed}{fix}. ({type(cause).__name__}: {cause})", field=field
    )


def empty_store_name(field: str, codec: object, stores: Mapping[str, Any]) -> StagedInsertError:
    """``<codec@>`` (no store name) for a codec whose own ``insert1`` refuses it, in DataJoint's words first."""
    label = codec_label(codec)
    default = stores.get("default")
    named = f"{label[:-1]}@{default if isinstance(default, str) else 'store'}>"
    return StagedInsertError(
        f"Storage '' is requested but not configured in stores: field '{field}' is declared {label[:-1]}@> with no "
        f"store name, which {label}'s own insert1 refuses (DataJoint 2.3.5 does not read it as stores.default), so "
        f"a staged insert refuses it too; name the store in the table definition: {named}",
        field=field,
    )


def missing_primary_key(missing: set[str], field: str | None = None) -> MissingPrimaryKeyError:
    """DataJoint 2.3.5's message for ``store()``/``open()`` before the whole key is set."""
    return MissingPrimaryKeyError(
        f"Primary key values must be set in staged.rec before calling store() or open(). Missing: {missing}",
        field=field,
    )


def codec_label(codec: object) -> str:
    """``<name>`` of a codec, for messages."""
    return f"<{getattr(codec, 'name', type(codec).__name__)}>"


def nothing_written(field: str, codec: object) -> NothingWrittenError:
    """The error for a staged field whose handle received nothing a value can be made of."""
    return NothingWrittenError(
        f"Nothing was written to field '{field}' ({codec_label(codec)}) through its staged handle; "
        "write the content inside the block, or do not ask for a handle",
        field=field,
    )


def _package_dir(module: object) -> str:
    return str(getattr(module, "__file__", "")).rsplit("/", 1)[0] + "/"


def warn(message: str, category: type[Warning]) -> None:
    """Issue a warning attributed to the user's line (a ``with`` block's, or a ``populate()`` call's).

    Frames of dj-staged and of DataJoint are skipped, whatever their depth.
    """
    import sys
    import warnings

    import datajoint

    internal = (_package_dir(sys.modules[__package__]), _package_dir(datajoint))
    level = 2  # stacklevel 2 is the caller of warn()
    caller: FrameType | None = sys._getframe(1)
    while caller is not None and caller.f_code.co_filename.startswith(internal):
        level, caller = level + 1, caller.f_back
    warnings.warn(message, category, stacklevel=level)
