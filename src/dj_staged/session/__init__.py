"""The session a staged insert block works with, and its lifecycle."""

from .batch import StagedBatch, StagedInsert, staged_insert
from .enable import disable, enable, is_enabled
from .lifecycle import StagedInsert1, staged_insert1
from .session import StagedSession

__all__ = [
    "StagedBatch",
    "StagedInsert",
    "StagedInsert1",
    "StagedSession",
    "disable",
    "enable",
    "is_enabled",
    "staged_insert",
    "staged_insert1",
]
