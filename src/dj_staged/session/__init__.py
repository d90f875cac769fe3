"""The session a staged insert block works with, and its lifecycle."""

from .batch import BatchInsert, StagedBatch, staged_insert
from .enable import disable, enable, is_enabled
from .lifecycle import StagedInsert1, staged_insert1
from .session import StagedSession

__all__ = [
    "BatchInsert",
    "StagedBatch",
    "StagedInsert1",
    "StagedSession",
    "disable",
    "enable",
    "is_enabled",
    "staged_insert",
    "staged_insert1",
]
