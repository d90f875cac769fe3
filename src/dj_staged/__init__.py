"""dj-staged: staged insert for every DataJoint object-store codec.

Importing the package changes nothing in DataJoint. Use
:func:`staged_insert1` directly, or call :func:`enable` to make
``Table.staged_insert1`` this engine (and :func:`disable` to restore
DataJoint's own).
"""

from .addressing import HashAddressedStaging, SchemaAddressedStaging
from .codecs import BlobArrayWriter, open_blob_array  # importing .codecs registers the built-in adapters
from .protocol import StagedCodec, participant_for, register_adapter
from .session import (
    StagedBatch,
    StagedInsert,
    StagedInsert1,
    StagedSession,
    disable,
    enable,
    is_enabled,
    staged_insert,
    staged_insert1,
)

__version__ = "0.1.0"

__all__ = [
    "BlobArrayWriter",
    "HashAddressedStaging",
    "SchemaAddressedStaging",
    "StagedBatch",
    "StagedCodec",
    "StagedInsert",
    "StagedInsert1",
    "StagedSession",
    "disable",
    "enable",
    "is_enabled",
    "open_blob_array",
    "participant_for",
    "register_adapter",
    "staged_insert",
    "staged_insert1",
]
