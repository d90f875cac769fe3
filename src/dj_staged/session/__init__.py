"""The session a staged insert block works with, and its lifecycle."""

from .enable import disable, enable, is_enabled
from .lifecycle import StagedInsert1, staged_insert1
from .session import StagedSession

__all__ = ["StagedInsert1", "StagedSession", "disable", "enable", "is_enabled", "staged_insert1"]
