"""What the processes share: counters in lock-free shared memory, their database sessions, their logs."""

from __future__ import annotations

import os
import time
from multiprocessing.sharedctypes import RawArray, RawValue
from pathlib import Path
from typing import Any

from soak.config import STAT, STATS, Services
from soak.content import declare_tables

PENDING_PER_WRITER = 4  # interrupted resumable writes a writer slot remembers at once


class Shared:
    """Lock-free shared memory: each process writes only its own row of ``stats`` and its own slot of ``done``.

    ``pending`` remembers interrupted resumable writes (soak.resumes), ``PENDING_PER_WRITER`` cells per writer slot:
    only that slot's writer fills its cells, any writer empties one once it committed that write. No lock is ever
    held, so a process killed at any instant cannot leave the others waiting.
    """

    def __init__(self, slots: int, writers: int, resumable: int = 0) -> None:
        self.stats = RawArray("q", slots * len(STATS))
        self.done = RawArray("q", max(1, writers))
        self.pending = RawArray("q", max(1, writers) * PENDING_PER_WRITER)
        # per resumable (table, key, field): the stored offset its holder last recorded durable (0: none, or
        # committing), when (ms), and the reclaiming collections begun by then (-1: one was running)
        self.prefixes = RawArray("q", max(1, resumable) * 3)
        self.stop = RawValue("b", 0)

    def add(self, slot: int, name: str, count: int = 1) -> None:
        self.stats[slot * len(STATS) + STAT[name]] += count

    def remember(self, slot: int, code: int, choice: int) -> int:
        """Put ``code`` (not 0) in a cell of writer ``slot``: an empty one, else the ``choice``-th; the cell's index."""
        cells = range(slot * PENDING_PER_WRITER, (slot + 1) * PENDING_PER_WRITER)
        cell = next((c for c in cells if self.pending[c] in (0, code)), cells[choice % PENDING_PER_WRITER])
        self.pending[cell] = code
        return cell

    def forget(self, cell: int, code: int) -> None:
        """Empty ``cell`` if it still holds ``code`` (its writer may have put another there meanwhile)."""
        if self.pending[cell] == code:
            self.pending[cell] = 0

    def remembered(self) -> list[tuple[int, int]]:
        """``(cell, code)`` of every cell that holds one."""
        return [(cell, code) for cell, code in enumerate(self.pending) if code]

    def reclaim_epoch(self) -> int:
        """Reclaiming collections begun so far; -1 while one runs (finished ones are read first)."""
        finished = self.total("collections_reclaiming")
        begun = self.total("reclaims_begun")
        return begun if begun == finished else -1

    def total(self, name: str) -> int:
        width = len(STATS)
        return sum(self.stats[i * width + STAT[name]] for i in range(len(self.stats) // width))


def connect(services: Services, app_name: str) -> Any:
    """This process's DataJoint connection; every session it opens carries ``app_name``."""
    from dj_staged.testing.services import PostgresInfo, connect_datajoint

    os.environ["PGAPPNAME"] = app_name  # libpq's default application_name: the orchestrator waits for these to end
    return connect_datajoint(PostgresInfo(**services.db), services.stores)


def open_schema(services: Services, schema_name: str, app_name: str) -> tuple[Any, dict[str, Any]]:
    """The soak's schema and tables, reached through a new connection."""
    import datajoint as dj

    connection = connect(services, app_name)
    schema = dj.Schema(schema_name, connection=connection, create_schema=False, create_tables=False)
    return schema, declare_tables(schema, services.store_names)


def record(services: Services, kind: str, text: str) -> None:
    """Append an entry to this process's log of ``kind`` (``errors``, ``lost``) in the work folder."""
    with open(Path(services.workdir) / f"{kind}-{os.getpid()}.log", "a") as log:
        log.write(text.rstrip() + "\n\x00\n")
        log.flush()


def idle() -> None:
    """Let the writers get ahead (deleters and collectors pace themselves on their operation count)."""
    time.sleep(0.005)


def app_name(schema_name: str) -> str:
    """The application name of every database session the soak's processes open."""
    return f"dj-soak-{schema_name}"
