"""The writers: operations drawn at random, each a staged block that may meet a fault of its own making.

A fault is an exception or a ``KeyboardInterrupt`` raised in the block, the process killed or stopped at a
protocol step, mid-write or after the commit, or its connection cut while its commit waits on a row lock.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dj_staged.steps import WRITER_STEPS
from soak.config import TABLES, Services, SoakConfig
from soak.content import expected, is_big, placed_path, plain_fields, tag_of
from soak.shared import Shared, app_name, open_schema, record

FIELDS_PER_ROW = 2.5  # mean number of staged fields per row
FAULTS = ("exception", "interrupt", "kill", "stop", "cut")
# the writer's steps (a commit's lookup only after a lost reply, which the soak does not cause), or mid-write
STEP_FAULTS = (*(step for step in WRITER_STEPS if step != "writer.resolve"), "mid-write")
HASHED = ("hash", "blob", "attach")


class SoakFault(Exception):
    """The exception a writer raises in its own block on purpose."""


@dataclass
class FieldPlan:
    """One staged field of a row: its name, the binary variant of its write, and a seed for its chunking."""

    name: str
    variant: bool
    seed: int


@dataclass
class RowPlan:
    """One row of an operation: its primary key and the fields it stages, in order."""

    key: int
    fields: list[FieldPlan]


@dataclass
class OpPlan:
    """One writer operation: a table, its rows, and at most one fault."""

    table: str
    batch: bool
    rows: list[RowPlan]
    fault: str | None = None
    step: str | None = None
    nth: int = 1
    catch_in_batch: bool = False


def plan_op(rng: random.Random, config: SoakConfig, stores: list[str]) -> OpPlan:
    """Draw the next operation."""
    names = plain_fields(stores)
    chance = min(1.0, FIELDS_PER_ROW / len(names))
    batch = rng.random() < config.batch_share
    rows = []
    big_unsized = False
    for _ in range(rng.randint(2, 5) if batch else 1):
        key = rng.randrange(config.key_space)
        chosen = [n for n in names if rng.random() < chance] or [rng.choice(names)]
        rng.shuffle(chosen)
        plans = []
        for name in chosen:
            codec, store = name.split("_", 1)
            big = codec == "blob" and is_big(store, key, config.big_every)
            variant = rng.random() < (0.2 if big else 0.5)  # <blob@>: size= given
            big_unsized = big_unsized or (big and not variant)
            plans.append(FieldPlan(name, variant, rng.randrange(1 << 30)))
        rows.append(RowPlan(key, plans))
    op = OpPlan(rng.choice(TABLES), batch, rows, catch_in_batch=rng.random() < 0.5)
    draw = rng.random()
    for fault, rate in zip(FAULTS, config.fault_rates, strict=True):
        if draw < rate:
            op.fault = fault
            break
        draw -= rate
    if op.fault in ("kill", "stop"):
        codecs = {p.name.split("_", 1)[0] for row in rows for p in row.fields}
        on_s3 = any(p.name.endswith("_s3") for row in rows for p in row.fields)
        choices = [
            s
            for s in STEP_FAULTS
            if (s not in ("writer.promote", "writer.dedup") or codecs & set(HASHED))
            and (s != "writer.place" or "fp" in codecs)
        ]
        if on_s3 and op.fault == "kill":
            choices.append("after-commit")
        op.step = rng.choice(choices)
        # most steps are reached once per row or field: the first time, mostly, so that most faults fire
        op.nth = rng.randint(1, 5) if op.step == "mid-write" else rng.choice((1, 1, 1, 2, 3))
    elif op.fault in ("exception", "interrupt"):
        op.nth = rng.randint(1, 8)
    elif op.fault == "cut":
        op.step = "writer.commit"
    elif big_unsized and rng.random() < 0.5:
        op.fault, op.step = "kill", "s3.multipart"
    return op


class Op:
    """The operation in progress in a writer: fires its fault at its checkpoint or protocol step."""

    def __init__(self, plan: OpPlan, shared: Shared, slot: int, table: Any = None, rng: Any = None) -> None:
        self.plan = plan
        self.shared = shared
        self.slot = slot
        self.table = table
        self.rng = rng or random.Random(0)
        self.checkpoints = 0
        self.seen = 0
        self.fired = False
        self.committing = False
        self.end_cut: Callable[[], None] | None = None

    def checkpoint(self) -> None:
        """A point inside the caller's block (between writes): exceptions, interrupts and mid-write faults."""
        self.checkpoints += 1
        plan = self.plan
        injected = plan.fault in ("exception", "interrupt") or plan.step == "mid-write"
        if injected and not self.fired and self.checkpoints == plan.nth:
            self.fire("write_kills")

    def end_of_block(self) -> None:
        """The last row's block ends: an exception or interrupt not fired yet fires now."""
        if self.plan.fault in ("exception", "interrupt") and not self.fired:
            self.fire()

    def at_step(self, step: str, **context: Any) -> None:
        """Observer of every writer step."""
        if step == "writer.dedup":
            self.shared.add(self.slot, "dedups")
        if step == "writer.commit":
            self.committing = True
        if step == "writer.place":
            self.shared.add(self.slot, "placed")
        if self.plan.step == step and not self.fired:
            self.seen += 1
            if self.seen == self.plan.nth:
                self.fire("step_kills")

    def at_s3_call(self, operation: str) -> None:
        """Before every S3 call of this process."""
        if self.fired:
            return
        if self.plan.step == "s3.multipart" and operation == "UploadPartCopy":
            self.fire("multipart_kills")
        elif self.plan.step == "after-commit" and self.committing:
            self.fire("after_commit_kills")

    def fire(self, kill_stat: str = "step_kills") -> None:
        self.fired = True
        fault = self.plan.fault
        if fault == "exception":
            self.shared.add(self.slot, "exceptions")
            raise SoakFault("a fault injected by the soak")
        if fault == "interrupt":
            self.shared.add(self.slot, "interrupts")
            raise KeyboardInterrupt
        if fault == "kill":
            self.shared.add(self.slot, kill_stat)
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "stop":
            self.shared.add(self.slot, "pauses")
            os.kill(os.getpid(), signal.SIGSTOP)
        hold = self.rng.choice((0.0, 0.0, 0.2, 1.0))
        if fault == "cut":
            self.end_cut = cut_while_committing(self.table, self.plan.rows[0].key, hold)
            if self.end_cut is not None:
                self.shared.add(self.slot, "commit_cuts")

    def end(self) -> None:
        """The operation is over: a cut that has not happened (its commit never waited on the key) never will."""
        if self.end_cut is not None:
            self.end_cut()


def cut_while_committing(table: Any, key: int, hold: float) -> Callable[[], None] | None:
    """At ``writer.commit``: another session takes ``key`` (``BEGIN; INSERT``), and a thread cuts this writer's
    connection once its commit statement waits for that row lock, then rolls the other session back after
    ``hold`` seconds. The statement lives on in the server (unless ``client_connection_check_interval``
    ends it) and commits once the lock is free: the writer must wait for it before it decides anything.
    Returns what ends the thread once the operation is over (so that it never cuts a later operation's connection
    waiting on some lock); None if the key could not be taken (a row holds it, or another writer's commit), when
    nothing is done."""
    import socket
    import threading

    import datajoint as dj

    from dj_staged._datajoint import backend_pid

    info = table.connection.conn_info
    holder = dj.Connection(info["host"], info["user"], info["passwd"], info["port"], use_tls=False)
    writer_pid = backend_pid(table.connection)
    try:
        holder.query("SET lock_timeout = '2s'")
        holder.query("BEGIN")
        holder.query(f"INSERT INTO {table.full_table_name} (k, tag) VALUES (%s, 'held by another session')", (key,))
    except Exception:
        holder.close()
        return None
    ended = threading.Event()

    def cut() -> None:
        try:
            waiting = "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted"
            deadline = time.monotonic() + 10
            while not (blocked := holder.query(waiting, (writer_pid,)).fetchone()[0]) and time.monotonic() < deadline:
                if ended.is_set():
                    return
                time.sleep(0.002)
            if not blocked:  # the commit never waited for this key (its row was not among those committed)
                return
            with socket.socket(fileno=os.dup(table.connection._conn.fileno())) as writers_socket:
                writers_socket.shutdown(socket.SHUT_RDWR)  # the network path is cut; the server's statement waits on
            time.sleep(hold)
        finally:
            with contextlib.suppress(Exception):
                holder.query("ROLLBACK")
            holder.close()

    thread = threading.Thread(target=cut, name="soak-cut", daemon=True)
    thread.start()

    def end() -> None:
        ended.set()
        thread.join()

    return end


_current: Op | None = None  # the operation in progress in this writer process


def _on_step(step: str, **context: Any) -> None:
    if _current is not None:
        _current.at_step(step, **context)


def _on_s3_call(model: Any = None, **kwargs: Any) -> None:
    if _current is not None and model is not None:
        _current.at_s3_call(model.name)


def pieces(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut into one to three pieces (none if empty)."""
    if not data:
        return []
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 2)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a] or [data]


def write_zarr(fsmap: Any, array: np.ndarray, op: Op, rng: random.Random) -> None:
    """An array written through a ``store()`` handle, chunk row by chunk row."""
    import zarr

    rows = rng.choice((1, 2))
    z = zarr.open(fsmap, mode="w", shape=array.shape, chunks=(rows, array.shape[1]), dtype=array.dtype)
    for start in range(0, array.shape[0], rows):
        z[start : start + rows] = array[start : start + rows]
        op.checkpoint()


def write_field(staged: Any, plan: FieldPlan, key: int, op: Op, big_every: int) -> None:
    """Write field ``plan.name`` of the row ``key`` through the staged session, as ``plan`` says."""
    import dj_staged

    name = plan.name
    codec = name.split("_", 1)[0]
    rng = random.Random(plan.seed)
    value = expected(name, key, big_every)
    if codec == "obj":
        kind, content = value
        if kind == "file":
            with staged.open(name, ".bin") as handle:
                for piece in pieces(content, rng):
                    handle.write(piece)
                    op.checkpoint()
        elif kind == "dir":
            fsmap = staged.store(name, ".d")
            for path, data in content.items():
                fsmap[path] = data
                op.checkpoint()
        else:
            write_zarr(staged.store(name, ".zarr"), content, op, rng)
    elif codec == "zarr":
        write_zarr(staged.store(name, ".zarr"), value, op, rng)
    elif codec == "fp":  # a deleted row's value stays at its path (DataJoint leaves it): the next writer replaces it
        kind, content = value
        path = placed_path(op.table.database, op.plan.table, name, key)
        if kind == "file":
            with staged.open(name, path=path, overwrite=True) as handle:
                for piece in pieces(content, rng):
                    handle.write(piece)
                    op.checkpoint()
        else:
            fsmap = staged.store(name, path=path, overwrite=True)
            for relative, data in content.items():
                fsmap[relative] = data
                op.checkpoint()
    elif codec == "npy":
        with staged.open(name, ".npy") as handle:
            np.save(handle, value, allow_pickle=False)
            op.checkpoint()
    elif codec == "hash":
        with staged.open(name, ".bin") as handle:
            for piece in pieces(value, rng):
                handle.write(piece)
                op.checkpoint()
    elif codec == "blob" and isinstance(value, np.ndarray):
        with dj_staged.open_blob_array(staged, name, value.shape, value.dtype) as out:
            cut = rng.randrange(value.shape[-1] + 1)
            for slab in (value[..., :cut], value[..., cut:]):
                if slab.shape[-1]:
                    out.write(slab)
                    op.checkpoint()
    elif codec == "blob":
        with staged.open(name, ".bin", size=len(value) if plan.variant else None) as handle:
            for piece in pieces(value, rng):
                handle.write(piece)
                op.checkpoint()
    elif codec == "attach":
        filename, content = value
        if plan.variant:
            staged.set_filename(name, filename)
        with staged.open(name, ".dat") as handle:
            for piece in pieces(content, rng):
                handle.write(piece)
                op.checkpoint()
        if not plan.variant:
            staged.set_filename(name, filename)


def write_row(staged: Any, table: str, row: RowPlan, op: Op, big_every: int, last: bool) -> None:
    """The body of one row's block."""
    staged.rec["k"] = row.key
    staged.rec["tag"] = tag_of(table, row.key)
    for plan in row.fields:
        write_field(staged, plan, row.key, op, big_every)
        op.checkpoint()
    if last:
        op.end_of_block()


def run_op(tables: dict[str, Any], plan: OpPlan, op: Op, shared: Shared, slot: int, big_every: int) -> None:
    """Perform one operation; a refusal or an injected fault escapes as its exception."""
    from datajoint.errors import DuplicateError

    import dj_staged
    from dj_staged.errors import PathTakenError

    table = tables[plan.table]
    shared.add(slot, "batch_ops" if plan.batch else "single_ops")
    shared.add(slot, "rows_tried", len(plan.rows))
    if not plan.batch:
        with dj_staged.staged_insert1(table) as staged:
            write_row(staged, plan.table, plan.rows[0], op, big_every, last=True)
        shared.add(slot, "rows_committed")
        return
    with dj_staged.staged_insert(table) as batch:
        for index, row in enumerate(plan.rows):
            try:
                with batch.row() as staged:
                    write_row(staged, plan.table, row, op, big_every, last=index == len(plan.rows) - 1)
            except DuplicateError:
                shared.add(slot, "refused")
            except PathTakenError:
                shared.add(slot, "paths_taken")
            except SoakFault:
                if not plan.catch_in_batch:
                    raise
        accepted = len(batch)
    shared.add(slot, "rows_committed", accepted)


def is_conflict(error: BaseException) -> bool:
    """A database conflict between concurrent transactions (a deadlock PostgreSQL broke): a refusal, not a bug."""
    text = f"{type(error).__name__}: {error}".lower()
    return "deadlock detected" in text


def draw_op(
    rng: random.Random, config: SoakConfig, services: Services, tables: dict[str, Any], shared: Shared, slot: int
) -> tuple[Any, Op, Callable[[], None]]:
    """The next operation: its plan, its :class:`Op`, and what performs it (a resumable block now and then,
    more often while an interrupted one waits to be taken over)."""
    from soak.resumes import ResumableOp, plan_resumable, run_resumable

    stores = services.store_names
    if rng.random() < config.resume_share * (3 if shared.remembered() else 1):
        resumable = plan_resumable(rng, config, stores, shared)
        op = ResumableOp(resumable, shared, slot, tables[resumable.table], rng, config.resume_window)
        return resumable, op, lambda: run_resumable(tables, resumable, op, shared, slot)
    plan = plan_op(rng, config, stores)
    current = Op(plan, shared, slot, tables[plan.table], rng)
    return plan, current, lambda: run_op(tables, plan, current, shared, slot, config.big_every)


def writer_main(
    slot: int, incarnation: int, config: SoakConfig, services: Services, schema_name: str, shared: Any
) -> None:
    """A writer process: operations until its share of the budget is used."""
    global _current
    from datajoint.errors import DuplicateError
    from datajoint.hash_registry import get_store_backend

    from dj_staged import steps
    from dj_staged.errors import PathTakenError
    from dj_staged.session.commit import is_connection_error

    try:
        _schema, tables = open_schema(services, schema_name, app_name(schema_name))
        with contextlib.ExitStack() as stack:
            for step in (*steps.WRITER_STEPS, *steps.RESUMER_STEPS):
                stack.enter_context(steps.observe(step, _on_step))
            if "s3" in services.store_names:
                fs = get_store_backend("s3").fs
                fs.connect()
                fs.s3.meta.events.register("before-call.s3", _on_s3_call)
            rng = random.Random(f"{config.seed}:writer:{slot}:{incarnation}")
            quota = config.quota(slot)
            while shared.done[slot] < quota:
                shared.done[slot] += 1
                shared.add(slot, "ops")
                plan, _current, perform = draw_op(rng, config, services, tables, shared, slot)
                try:
                    perform()
                except DuplicateError:
                    shared.add(slot, "refused")
                except PathTakenError:  # another writer of the same key holds its path (paused, or in flight)
                    shared.add(slot, "paths_taken")
                except SoakFault:
                    pass
                except KeyboardInterrupt:
                    if plan.fault != "interrupt":
                        raise
                except Exception as error:
                    if plan.fault == "cut" and is_connection_error(error):
                        pass  # the cut commit was found not committed: its error is the connection's
                    elif is_conflict(error):
                        shared.add(slot, "conflicts")
                    else:
                        shared.add(slot, "unexpected")
                        record(services, "errors", f"writer{slot}: operation {plan}:\n{traceback.format_exc()}")
                finally:
                    if _current is not None:
                        _current.end()
                    _current = None
    except BaseException:
        record(services, "errors", f"writer{slot}: {traceback.format_exc()}")
        raise
