"""dj-staged's own settings, read from the environment (nothing of ours goes into DataJoint's store specs).

- ``DJ_STAGED_COMMIT_WAIT`` (seconds, default 60): how long a writer whose commit lost its connection
  waits for that commit's transaction to end on the server before it gives up with
  :class:`~dj_staged.errors.AmbiguousCommitError` and keeps every object.
- ``DJ_STAGED_CLIENT_CHECK`` (seconds, default 5, ``0`` to leave the server's setting alone): the
  ``client_connection_check_interval`` a writer's database session runs with (PostgreSQL 14 and later),
  so a statement whose client is gone is aborted by the server instead of waiting on.
"""

from __future__ import annotations

import os

COMMIT_WAIT = "DJ_STAGED_COMMIT_WAIT"
CLIENT_CHECK = "DJ_STAGED_CLIENT_CHECK"


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {text!r}")
    return value


def commit_wait() -> float:
    """Seconds to wait for a doubtful commit's transaction to end before the outcome is called unknown."""
    return _seconds(COMMIT_WAIT, 60.0)


def client_check() -> float:
    """``client_connection_check_interval`` for writers' sessions in seconds; 0 leaves the server's own."""
    return _seconds(CLIENT_CHECK, 5.0)
