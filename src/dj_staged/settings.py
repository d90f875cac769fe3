"""dj-staged's own settings, read from the environment (nothing of ours goes into DataJoint's store specs).

- ``DJ_STAGED_COMMIT_WAIT`` (seconds, default 60): how long a writer whose commit lost its connection
  waits for that commit's transaction to end on the server before it gives up with
  :class:`~dj_staged.errors.AmbiguousCommitError` and keeps every object.
- ``DJ_STAGED_CLIENT_CHECK`` (seconds, default 5, ``0`` to leave the server's setting alone): the
  ``client_connection_check_interval`` a writer's database session runs with (PostgreSQL 14 and later),
  so a statement whose client is gone is aborted by the server instead of waiting on.
- ``DJ_STAGED_PART_SIZE`` (bytes, default 8 MiB): what a
  store uploads at a time, and how often a resumable write makes its bytes durable and records them.
- ``DJ_STAGED_RESUME_WINDOW`` (a duration, default: the collector's grace period): how long a resumable write that
  stopped is kept for resumption after its last durable byte.
- ``DJ_STAGED_GCS_SESSION_QUERY`` (default on): a resumed GCS upload asks the service for its session's offset.
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


PART_SIZE = "DJ_STAGED_PART_SIZE"
RESUME_WINDOW = "DJ_STAGED_RESUME_WINDOW"
GCS_SESSION_QUERY = "DJ_STAGED_GCS_SESSION_QUERY"
_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}
_DURATIONS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def part_size(default: int) -> int:
    """``DJ_STAGED_PART_SIZE`` (bytes; ``256KiB``, ``8MiB`` and the like), else ``default``: the part, chunk or block
    a store uploads at a time, and the durable unit of a resumable write (a local store's fsync interval)."""
    text = os.environ.get(PART_SIZE, "").strip().lower().replace(" ", "")
    if not text:
        return default
    number = text.rstrip("kmgib")
    unit = text[len(number) :]
    try:
        value = int(float(number) * _UNITS[unit])
    except (ValueError, KeyError):
        raise ValueError(f"{PART_SIZE} must be a size such as 8MiB or 262144, not {text!r}") from None
    if value < 1:
        raise ValueError(f"{PART_SIZE} must be positive, not {text!r}")
    return value


def resume_window(default: float) -> float:
    """``DJ_STAGED_RESUME_WINDOW`` in seconds (``90s``, ``12h``, ``2d`` or seconds), else ``default``: how long after
    its last durable byte a resumable write that stopped is kept for resumption."""
    text = os.environ.get(RESUME_WINDOW, "").strip().lower()
    if not text:
        return default
    number = text.rstrip("smhdw")
    try:
        value = float(number) * _DURATIONS[text[len(number) :]]
    except (ValueError, KeyError):
        raise ValueError(f"{RESUME_WINDOW} must be a duration such as 12h, 2d or seconds, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{RESUME_WINDOW} must not be negative, not {text!r}")
    return value


def gcs_session_query() -> bool:
    """Whether a resumed GCS upload asks the service how many bytes its session holds (``DJ_STAGED_GCS_SESSION_QUERY``,
    default on). fake-gcs-server completes the upload when asked, so its tests turn it off."""
    return os.environ.get(GCS_SESSION_QUERY, "1").strip().lower() not in ("0", "false", "no", "off")
