"""The checkpoints of a resumable write through ``open()``, and how a later attempt goes on from the last one.

A checkpoint joins three things: what the store reports durable (its
:class:`~dj_staged.stores.resumable.Checkpoint`), what the lifecycle needs to go
on (the path, and for a hash-addressed value its layout and stored prefix), and,
when the value is hashed while it is written, the MD5's state at exactly that
offset (:mod:`~dj_staged.addressing.md5state`). It is recorded in the write's
lease, replacing the previous one.

A later attempt reopens the path from the checkpoint; if the store finds the
durable prefix missing or changed (or the lifecycle finds it was written with
another prefix), the attempt warns with
:class:`~dj_staged.errors.ResumeRestartedWarning`, saying why, frees what the
earlier attempt held there, and writes from byte 0.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import DurablePrefixLostError, ResumeRestartedWarning, warn
from ..protocol import StagedField
from ..stores.resumable import Checkpoint, ResumableWriter


class Resumption:
    """Turns a store's checkpoints of one file into the field's checkpoint records."""

    def __init__(self, field: StagedField, base: dict[str, Any], prefix_length: int = 0) -> None:
        self.field = field
        self.base = base  # what the lifecycle needs to go on: kind, path, layout, prefix
        self.prefix_length = prefix_length
        self._digests: dict[int, str] = {}  # stored offset -> MD5 state there, until its checkpoint is recorded
        self._lock = threading.Lock()

    def digest_at(self, offset: int, state: str) -> None:
        """The MD5 of the stored bytes up to ``offset`` has state ``state`` (before those bytes reach the store)."""
        with self._lock:
            self._digests[offset] = state

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        """The store made ``checkpoint.offset`` bytes durable: record it, with the digest state there."""
        with self._lock:
            digest = self._digests.get(checkpoint.offset)
            for offset in [o for o in self._digests if o < checkpoint.offset]:
                del self._digests[offset]
        doc = {
            **self.base,
            "checkpoint": checkpoint.as_dict(),
            "durable": max(0, checkpoint.offset - self.prefix_length),
            "digest": digest,
            "at": time.time(),
        }
        self.field.checkpoint(doc)

    def restart(self, why: str) -> None:
        """The durable prefix cannot be used: say so, and record that this field starts over."""
        warn(
            f"{self.field.label}: what an earlier attempt wrote cannot be resumed, so it is written from byte 0 "
            f"(f.tell() is 0): {why}",
            ResumeRestartedWarning,
        )
        self.field.checkpoint({**self.base, "durable": 0, "restarted": why, "at": time.time()})


def open_resumed(
    field: StagedField, path: str, resumption: Resumption, checkpoint: Checkpoint | None
) -> tuple[ResumableWriter, Checkpoint | None]:
    """A resumable writer on ``path``: from ``checkpoint`` when the store still holds that prefix, else (after a
    :class:`~dj_staged.errors.ResumeRestartedWarning`) from byte 0; and the checkpoint it goes on from."""
    store = field.store
    if checkpoint is not None:
        try:
            writer = store.open_resumable(path, on_checkpoint=resumption.on_checkpoint, resume_from=checkpoint)
            return writer, checkpoint
        except DurablePrefixLostError as error:
            lost(field, path, resumption, checkpoint, str(error))
    return store.open_resumable(path, on_checkpoint=resumption.on_checkpoint), None


def lost(field: StagedField, path: str, resumption: Resumption, checkpoint: Checkpoint | None, why: str) -> None:
    """Warn that ``path`` starts over, and free what the earlier attempt held there (its object, parts, session)."""
    resumption.restart(why)
    field.store.abandon_resumable(path, checkpoint)
