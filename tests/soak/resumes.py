"""Resumable operations: blocks with ``resume=True`` cut off mid-write, and later ones that take their key over.

A first attempt stages one resumable field of a row at the resumable keys (a file, hash-addressed bytes, an array
through ``open_blob_array`` or a Zarr directory through ``store()``, each a few durable units long under a small
``DJ_STAGED_PART_SIZE``), remembered in the shared ``pending`` cells before it begins. Most are cut off: killed
(SIGKILL) at a random offset once the durable units its bytes reach are recorded, or at its n-th checkpoint;
interrupted (``KeyboardInterrupt``); stopped (the orchestrator collects meanwhile). A later operation, by any writer,
takes a remembered write over: its handle starts where the durable bytes end (``f.tell()``, the blob writer's
``filled``, the directory's ``durable`` keys), the source is sought there, the rest written, the row committed. A
collection with a resume window of 0 may have reclaimed the prefix meanwhile: the takeover then starts from byte 0.
Two writers taking over the same key: one is refused with ``ResumeKeyTakenError``, an expected outcome.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from soak.config import TABLES, SoakConfig
from soak.content import RESUME_UNIT, RESUME_UNITS, expected, resumable_fields, tag_of
from soak.shared import PENDING_PER_WRITER, Shared
from soak.writers import Op, SoakFault

RESUME_FAULTS = ("kill", "interrupt", "stop", "exception")
FIRST_RATES = (0.45, 0.15, 0.08, 0.05)  # a first attempt's faults: most are cut off
TAKEOVER_RATES = (0.15, 0.05, 0.06, 0.03)  # a takeover's: most commit
TAKEOVER_SHARE = 0.7  # a resumable operation takes a remembered write over (if one is) rather than begin one
PART_SIZE = "64KiB"  # DJ_STAGED_PART_SIZE of resumable blocks (S3 raises it to 5 MiB, GCS to 256 KiB)
DURABLE_WAIT = 60.0  # seconds a cut-off waits for the checkpoint of the units its bytes reach


@dataclass
class ResumePlan:
    """One resumable block: its row and field, the remembered write it takes over (``cell`` >= 0), its fault."""

    table: str
    key: int
    name: str
    code: int
    index: int = 0  # of its (table, key, field) in the shared ``prefixes``
    cell: int = -1
    takeover: bool = False
    fault: str | None = None
    step: str = "mid-write"  # "mid-write" (at ``cut`` of what is left), or "writer.checkpoint"/"writer.takeover"
    nth: int = 1
    cut: float = 0.5


def encode(table: str, key: int, name: str, names: list[str]) -> int:
    """A remembered write as one non-zero integer."""
    return ((TABLES.index(table) << 24) + key) * 256 + names.index(name) + 1


def decode(code: int, names: list[str]) -> tuple[str, int, str]:
    """``(table, key, field)`` of a remembered write."""
    rest, index = divmod(code - 1, 256)
    return TABLES[rest >> 24], rest & ((1 << 24) - 1), names[index]


def plan_resumable(rng: random.Random, config: SoakConfig, stores: list[str], shared: Shared) -> ResumePlan:
    """Draw the next resumable block: a takeover of a remembered write, or a first attempt."""
    names = resumable_fields(stores)
    remembered = shared.remembered()
    if remembered and rng.random() < TAKEOVER_SHARE:
        cell, code = rng.choice(remembered)
        plan = ResumePlan(*decode(code, names), code=code, cell=cell, takeover=True)
        rates = TAKEOVER_RATES
    else:
        table, name = rng.choice(TABLES), rng.choice(names)
        key = config.key_space + rng.randrange(config.resume_key_space)
        plan = ResumePlan(table, key, name, encode(table, key, name, names))
        rates = FIRST_RATES
    row = TABLES.index(plan.table) * config.resume_key_space + plan.key - config.key_space
    plan.index = row * len(names) + names.index(plan.name)
    draw = rng.random()
    for fault, rate in zip(RESUME_FAULTS, rates, strict=True):
        if draw < rate:
            plan.fault = fault
            break
        draw -= rate
    if plan.fault in ("kill", "stop"):
        plan.step = rng.choice(("mid-write", "mid-write", "writer.checkpoint", "writer.takeover"))
    plan.nth = rng.randint(1, 3)
    plan.cut = rng.uniform(0.05, 0.95)
    return plan


class LostPrefixError(AssertionError):
    """A resumable write began from byte 0 though its prefix was recorded durable and no collection could have
    reclaimed it."""


class Durable:
    """Hears ``writer.checkpoint``: the highest stored offset recorded durable (a directory's: the files one
    checkpoint records), told to ``on_offset`` too."""

    def __init__(self, on_offset: Callable[[int], None] = lambda offset: None) -> None:
        self.offset = 0
        self.changed = threading.Condition()
        self.on_offset = on_offset

    def __call__(self, **context: Any) -> None:
        doc = context["doc"]
        if doc.get("kind") == "directory":
            offset = len(doc.get("files") or {})
        else:
            offset = int((doc.get("checkpoint") or {}).get("offset") or 0)
        with self.changed:
            self.offset = max(self.offset, offset)
            self.changed.notify_all()
        if offset:
            self.on_offset(offset)

    def wait_for(self, offset: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.offset >= offset, timeout=DURABLE_WAIT)


class ResumableOp(Op):
    """A resumable block in progress: fires its fault mid-write (:meth:`cut_off`) or at a resumer's step."""

    def __init__(
        self, plan: ResumePlan, shared: Shared, slot: int, table: Any, rng: random.Random, window: float
    ) -> None:
        super().__init__(plan, shared, slot, table, rng)  # type: ignore[arg-type]  # Op reads its fault, step, nth
        self.durable = Durable(self.recorded)
        self.window = window
        self.began = -1
        self.caught: list[warnings.WarningMessage] = []
        self.cell = slice(3 * plan.index, 3 * plan.index + 3)

    def fire(self, kill_stat: str = "resume_kills") -> None:
        if self.plan.fault == "exception":  # the caller's error: the write is reclaimed at once
            self.shared.prefixes[self.cell] = [0, 0, 0]
        super().fire("resume_kills")

    def recorded(self, offset: int) -> None:
        """A checkpoint of this write is recorded: shared, so the next holder of its key knows what to expect."""
        self.shared.prefixes[self.cell] = [offset, int(time.time() * 1000), self.shared.reclaim_epoch()]

    def at_step(self, step: str, **context: Any) -> None:
        if step == "writer.commit":  # from here the prefix may be consumed: no one expects it any more
            self.shared.prefixes[self.cell] = [0, 0, 0]
        super().at_step(step, **context)

    def opened(self, began: int, head: int = 0, grain: int = 1) -> None:
        """The handle is open (this block holds the key) and says what is durable already (``began``: bytes,
        columns of ``grain`` bytes after a ``head``, or files). The prefix its last holder recorded must be found
        if it holds any of those and no collection could have reclaimed it: none with a window of 0 begun or
        running since, and well within the soak's window."""
        from dj_staged.errors import ResumeRestartedWarning

        self.began = began
        restarted = any(issubclass(w.category, ResumeRestartedWarning) for w in self.caught)
        offset, when, epoch = self.shared.prefixes[self.cell]
        kept = epoch >= 0 and epoch == self.shared.reclaim_epoch() and time.time() * 1000 - when < self.window * 500
        self.shared.prefixes[self.cell] = [0, 0, 0]
        if began:
            self.shared.add(self.slot, "resumed")
        elif restarted:
            self.shared.add(self.slot, "resume_restarts")
        elif self.plan.takeover:
            self.shared.add(self.slot, "resume_fresh")
        if (offset - head) // grain > 0 and kept and (restarted or not began):
            raise LostPrefixError(
                f"{self.plan.table} k={self.plan.key} {self.plan.name}: began at 0 (restarted: {restarted}) though "
                f"{offset} (bytes, or files) were recorded durable {time.time() - when / 1000:.1f} s before, and no "
                "collection could have reclaimed them"
            )

    def cut_off(self, stored: int = 0, unit: int = 0) -> None:
        """At the cut, if this block's fault fires there: once the units up to ``stored`` are recorded durable."""
        if self.plan.fault is None or self.plan.step != "mid-write" or self.fired:
            return
        if unit and stored >= unit:
            self.durable.wait_for(stored - stored % unit)
        self.fire()


@contextlib.contextmanager
def small_units() -> Iterator[None]:
    """A small durable unit for the block; GCS sessions trusted to their checkpoint (fake-gcs-server completes a
    session asked for its offset)."""
    saved = os.environ.get("DJ_STAGED_PART_SIZE")
    os.environ["DJ_STAGED_PART_SIZE"] = PART_SIZE
    os.environ["DJ_STAGED_GCS_SESSION_QUERY"] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["DJ_STAGED_PART_SIZE"]
        else:
            os.environ["DJ_STAGED_PART_SIZE"] = saved


def write_resumable(staged: Any, plan: ResumePlan, op: ResumableOp) -> None:
    """Stage the plan's field, going on from what the handle says is durable; the fault fires at the cut."""
    import zarr

    import dj_staged
    from dj_staged.codecs.blob import array_header

    codec, store = plan.name.split("_", 1)
    value = expected(plan.name, plan.key, 0)
    if codec in ("robj", "rhash"):
        with staged.open(plan.name, ".bin") as f:
            op.opened(f.tell(), f.content_offset)
            source = io.BytesIO(value)
            source.seek(op.began)
            f.write(source.read(int((len(value) - op.began) * plan.cut)))
            op.cut_off(f.content_offset + source.tell(), f.unit)
            shutil.copyfileobj(source, f, 1 << 16)
    elif codec == "rblob":
        with dj_staged.open_blob_array(staged, plan.name, value.shape, value.dtype) as out:
            header, column = len(array_header(value.shape, value.dtype)), value.shape[0] * value.itemsize
            op.opened(out.filled, header, column)
            cut = op.began + int((value.shape[-1] - op.began) * plan.cut)
            out.write(value[..., op.began : cut])
            op.cut_off(header + cut * column, RESUME_UNITS.get(store, RESUME_UNIT))
            out.write(value[..., cut:])
    else:
        fsmap = staged.store(plan.name, ".zarr")
        durable = set(fsmap.durable)
        op.opened(len(durable))
        z = zarr.open(fsmap, mode="a", shape=value.shape, chunks=(1, value.shape[1]), dtype=value.dtype)
        rows = [i for i in range(value.shape[0]) if f"c/{i}/0" not in durable]
        for index, i in enumerate(rows):
            if index == int(len(rows) * plan.cut):
                op.cut_off()
            z[i] = value[i]


def run_resumable(tables: dict[str, Any], plan: ResumePlan, op: ResumableOp, shared: Shared, slot: int) -> None:
    """Perform one resumable block; a refusal is counted, an injected fault escapes as its exception."""
    from datajoint.errors import DuplicateError

    import dj_staged
    from dj_staged import steps
    from dj_staged.errors import ResumeKeyTakenError, ResumeRestartedWarning

    shared.add(slot, "resume_ops")
    shared.add(slot, "rows_tried")
    if plan.takeover:
        shared.add(slot, "resume_takeovers")
    else:
        plan.cell = shared.remember(slot, plan.code, op.rng.randrange(PENDING_PER_WRITER))
    with (
        small_units(),
        steps.observe("writer.checkpoint", op.durable),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", ResumeRestartedWarning)
        op.caught = caught
        try:
            with dj_staged.staged_insert1(op.table, resume=True) as staged:
                staged.rec["k"] = plan.key
                staged.rec["tag"] = tag_of(plan.table, plan.key)
                write_resumable(staged, plan, op)
        except ResumeKeyTakenError:  # another writer takes the same write over now: it stays remembered
            shared.add(slot, "resume_taken")
            return
        except (DuplicateError, SoakFault):  # the row exists, or the caller's error reclaimed the write at once
            shared.forget(plan.cell, plan.code)
            raise
    shared.forget(plan.cell, plan.code)
    shared.add(slot, "rows_committed")
    if op.began > 0:
        shared.add(slot, "resumed_committed")
