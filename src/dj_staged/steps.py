"""The named steps of the writer–collector protocol, and a way to observe them.

Each party announces its steps in order (see ``docs/spec.md``):

- writer: ``writer.lease``, ``writer.write``, ``writer.verify``, ``writer.promote``
  or ``writer.dedup`` (hash-addressed), ``writer.place`` (a path the writer chose:
  its object is there now), ``writer.commit``, ``writer.release``; and ``writer.resolve``
  when its commit lost its connection, before it waits for that commit's transaction
  to end and looks its rows up; and ``writer.key`` in a batch, when a row's exit has
  the answer to the lookup of its key sent at its first handle (``found``);
- resumer (``resume=True``): ``writer.takeover``, once it has recorded in its own lease what an earlier attempt
  of its row left and before it removes that attempt's lease; ``writer.checkpoint``, once a checkpoint is recorded;
- collector: ``collector.list``, ``collector.read_leases``,
  ``collector.read_references``, ``collector.delete``.

An observer runs synchronously at the step, in the announcing thread, so a test
can pause one party at a named step (a barrier, a SIGSTOP) and run the other.
With no observer a step costs one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

WRITER_STEPS = (
    "writer.lease",
    "writer.write",
    "writer.verify",
    "writer.promote",
    "writer.dedup",
    "writer.place",
    "writer.commit",
    "writer.resolve",
    "writer.release",
)
BATCH_STEPS = ("writer.key",)  # a batch's rows only: not every block reaches it
RESUMER_STEPS = ("writer.takeover", "writer.checkpoint")  # resumable blocks only
COLLECTOR_STEPS = ("collector.list", "collector.read_leases", "collector.read_references", "collector.delete")
STEPS = WRITER_STEPS + BATCH_STEPS + RESUMER_STEPS + COLLECTOR_STEPS

Observer = Callable[..., None]

_observers: dict[str, list[Observer]] = {}
_lock = threading.Lock()


def reach(step: str, **context: object) -> None:
    """Announce ``step``; every observer of it runs now with ``context`` (paths, keys, the party)."""
    observers = _observers.get(step)
    if observers:
        for observer in list(observers):
            observer(step=step, **context)


@contextlib.contextmanager
def observe(step: str, observer: Observer) -> Iterator[None]:
    """Call ``observer(step=..., **context)`` each time ``step`` is reached inside the block."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; one of {STEPS}")
    with _lock:
        _observers.setdefault(step, []).append(observer)
    try:
        yield
    finally:
        with _lock:
            _observers[step].remove(observer)
            if not _observers[step]:
                del _observers[step]
