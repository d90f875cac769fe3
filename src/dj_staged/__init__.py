"""dj-staged: staged insert for every DataJoint object-store codec.

Importing the package changes nothing in DataJoint and loads nothing heavy:
the names below are imported on first use. Use :func:`staged_insert1`
directly, or call :func:`enable` to make ``Table.staged_insert1`` this engine
(and :func:`disable` to restore DataJoint's own). The error and warning classes
of :mod:`dj_staged.errors` are here too (``dj_staged.StagedInsertError``).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("dj-staged")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

_ERRORS = (
    "AmbiguousCommitError",
    "AutoPopulatedInsertError",
    "CommitRecoveredWarning",
    "ContentError",
    "DurablePrefixLostError",
    "HandleModeError",
    "GateLostError",
    "IgnoredValueWarning",
    "IncompleteObjectError",
    "InvalidPathError",
    "LeaseLostError",
    "MissingPrimaryKeyError",
    "NotParticipatingError",
    "NothingWrittenError",
    "PathTakenError",
    "ProtocolViolationError",
    "ResumeKeyTakenError",
    "ResumeRestartedWarning",
    "StagedInsertError",
    "UnsupportedBackendError",
)

_EXPORTS = {
    **dict.fromkeys(_ERRORS, "dj_staged.errors"),
    "BatchInsert": "dj_staged.session",
    "BlobArrayWriter": "dj_staged.codecs.blob",
    "HashAddressedStaging": "dj_staged.addressing",
    "PROTOCOL_VERSION": "dj_staged.protocol",
    "PlacedStaging": "dj_staged.addressing",
    "SchemaAddressedStaging": "dj_staged.addressing",
    "StagedBatch": "dj_staged.session",
    "StagedCodec": "dj_staged.protocol",
    "StagedField": "dj_staged.protocol",
    "StagedInsert1": "dj_staged.session",
    "StagedSession": "dj_staged.session",
    "ZarrArrayStaging": "dj_staged.codecs.zarr",
    "create_zarr_array": "dj_staged.codecs.zarr",
    "disable": "dj_staged.session",
    "enable": "dj_staged.session",
    "is_enabled": "dj_staged.session",
    "open_blob_array": "dj_staged.codecs.blob",
    "participant_for": "dj_staged.protocol",
    "register_adapter": "dj_staged.protocol",
    "staged_insert": "dj_staged.session",
    "staged_insert1": "dj_staged.session",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dj_staged' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
