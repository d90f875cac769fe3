"""A randomized soak of staged inserts and collections: no committed row ever loses its data.

Writers (every codec, single rows and batches, with exceptions, interrupts, kills and pauses at protocol
steps, and connections cut while a commit waits on a row lock), deleters and looping ``grace=0``
collectors run as separate processes, each with its own database session, against a local store and
object stores (S3 on moto, GCS on fake-gcs-server, Azure on Azurite: ``--stores``) for a fixed number of
writer operations. The parent (the orchestrator) restarts killed writers, runs a collection while a writer
is stopped and then resumes it, and kills a random writer now and then. At the end every committed row
must fetch exactly the content its key determines, and after a final collection nothing unreferenced may
be left in any store: no file outside a row's objects, nothing in ``_staging/``, no lease, no incomplete
upload.

    python tests/soak.py --ops 2000 --stores local,s3,gcs,azure --writers 3 --seed 1

Run as a script it starts its own PostgreSQL and emulators; :func:`run_soak` takes them from the caller
(``tests/test_soak.py`` runs a short version inside ``make test``). The exit status is 0 only if no row
was lost, nothing was left and no process met an unexpected error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import random
import signal
import sys
import tempfile
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import RawArray, RawValue
from pathlib import Path
from typing import Any

import numpy as np
from support.s3 import s3_client

from dj_staged.steps import WRITER_STEPS

TABLES = ("Alpha", "Beta")
CODECS = ("obj", "npy", "hash", "blob", "attach", "zarr")
DECLARED = {"obj": "object", "npy": "npy", "hash": "hash", "blob": "blob", "attach": "attach", "zarr": "zarr"}
SHARED_CONTENTS = 7  # hash-addressed content depends on k % 7: the same bytes recur across keys (dedup races)
BIG_SIZE = 17 << 20  # above dj-staged's 16 MiB: framing a <blob@> on S3 is then a multipart upload
FIELDS_PER_ROW = 2.5  # mean number of staged fields per row
COLLECT_PACE = 3  # a collector starts its next round once the writers have begun this many more operations

# what the processes count (each in its own row of the shared table, which only it writes)
STATS = (
    "ops",
    "single_ops",
    "batch_ops",
    "rows_tried",
    "rows_committed",
    "refused",
    "conflicts",
    "exceptions",
    "interrupts",
    "step_kills",
    "write_kills",
    "multipart_kills",
    "after_commit_kills",
    "commit_cuts",
    "pauses",
    "dedups",
    "deletes",
    "verified_before_delete",
    "collections",
    "collections_default_grace",
    "collected",
    "unexpected",
)
STAT = {name: index for index, name in enumerate(STATS)}

FAULTS = ("exception", "interrupt", "kill", "stop", "cut")
# the writer's steps (a commit's lookup only after a lost reply, which the soak does not cause), or mid-write
STEP_FAULTS = (*(step for step in WRITER_STEPS if step != "writer.resolve"), "mid-write")
HASHED = ("hash", "blob", "attach")


@dataclass(frozen=True)
class SoakConfig:
    """What one soak runs: the operation budget, stores, processes, seed and fault rates."""

    ops: int = 2000
    stores: tuple[str, ...] = ("local", "s3")
    writers: int = 3
    deleters: int = 1
    collectors: int = 2
    seed: int = 1
    keys: int = 0  # primary keys 0..keys-1 per table; 0: ops // 4, at least 24
    batch_share: float = 0.35
    # exception, interrupt, kill, stop, and cut: the commit waits on a row lock another session holds, and its
    # connection is cut on the writer's side; the other session then rolls back, at once or a little later
    fault_rates: tuple[float, ...] = (0.07, 0.05, 0.07, 0.06, 0.05)
    kill_every: int = 40  # the orchestrator kills a random writer about every this many operations (0: never)
    delete_share: float = 1.0  # deletes per writer operation
    big_every: int = 50  # every big_every-th key holds a 17 MiB <blob@s3> (0: none)
    timeout: float = 3600.0

    @property
    def key_space(self) -> int:
        return self.keys or max(24, self.ops // 4)

    def quota(self, slot: int) -> int:
        """The operations writer ``slot`` performs: the budget split evenly, so the total is exact."""
        return self.ops // self.writers + (1 if slot < self.ops % self.writers else 0)


@dataclass(frozen=True)
class Services:
    """Where the soak runs: the database, the stores' configuration (``dj.config.stores``), a work folder."""

    db: dict[str, Any]
    stores: dict[str, Any]
    workdir: str

    @property
    def store_names(self) -> list[str]:
        return [name for name in self.stores if name != "default"]


@dataclass
class SoakResult:
    """Counts of a finished soak and everything it found wrong."""

    stats: dict[str, int]
    rows_verified: int = 0
    lost: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.leftovers or self.errors)

    def summary(self, config: SoakConfig) -> str:
        """The figures, one aspect per line."""
        s = self.stats
        kills = s["step_kills"] + s["write_kills"] + s["multipart_kills"] + s["after_commit_kills"]
        return "\n".join(
            [
                f"soak: {s['ops']} operations ({s['single_ops']} single, {s['batch_ops']} batch) by "
                f"{config.writers} writers on {','.join(config.stores)}, seed {config.seed}, {self.seconds:.0f} s",
                f"  rows: {s['rows_tried']} tried, {s['rows_committed']} committed, {s['refused']} refused as "
                f"duplicates, {s['conflicts']} in a database conflict; {s['deletes']} deleted",
                f"  faults: {s['exceptions']} exceptions, {s['interrupts']} KeyboardInterrupts, {kills} self-kills "
                f"({s['step_kills']} at a protocol step, {s['write_kills']} mid-write, {s['multipart_kills']} in a "
                f"multipart upload, {s['after_commit_kills']} after the commit), {s['orchestrator_kills']} kills by "
                f"the orchestrator, {s['restarts']} restarts, {s['pauses']} pauses, {s['commit_cuts']} connections "
                "cut while their commit waited on a row lock",
                f"  dedups: {s['dedups']}",
                f"  collections: {s['collections'] + s['pause_collections'] + s['final_collections']} "
                f"({s['collections']} looping, {s['collections_default_grace']} of them with the default grace; "
                f"{s['pause_collections']} while a writer was stopped; {s['final_collections']} final), "
                f"{s['collected']} objects collected",
                f"  verified: {self.rows_verified} rows at the end and {s['verified_before_delete']} before their "
                f"deletion, {len(self.lost)} lost; {len(self.leftovers)} unreferenced objects left; "
                f"{len(self.errors)} unexpected errors",
            ]
        )


# ---------------------------------------------------------------- content: a function of (field, key)


def pseudo_bytes(label: str, size: int) -> bytes:
    """``size`` deterministic pseudo-random bytes named by ``label``."""
    return np.random.default_rng(zlib.crc32(label.encode())).bytes(size)


def sequence(label: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A deterministic array of ``shape`` and ``dtype``."""
    values = (np.arange(int(np.prod(shape))) * (zlib.crc32(label.encode()) % 89 + 3)) % 97
    return values.astype(dtype).reshape(shape)


def is_big(store: str, key: int, big_every: int) -> bool:
    """Whether ``key``'s ``<blob@>`` on ``store`` is big enough for a multipart upload."""
    return store == "s3" and big_every > 0 and key % big_every == big_every - 1


def expected(name: str, key: int, big_every: int) -> Any:
    """What field ``name`` (``{codec}_{store}``) of the row with primary key ``key`` holds."""
    codec, store = name.split("_", 1)
    shared = key % SHARED_CONTENTS
    if codec == "obj":
        kind = ("file", "dir", "zarr")[key % 3]
        if kind == "file":
            return kind, pseudo_bytes(f"obj/{key}/file", 300 + 13 * (key % 40))
        if kind == "dir":
            files = {
                "a.txt": pseudo_bytes(f"obj/{key}/a", 64 + key % 50),
                "sub/b.bin": pseudo_bytes(f"obj/{key}/b", 90),
            }
            if key % 2:
                files["sub/deeper/c.bin"] = pseudo_bytes(f"obj/{key}/c", 33)
            return kind, files
        return kind, sequence(f"obj/{key}", (key % 4 + 2, 5), ("uint16", "float32", "int8", "float64")[key % 4])
    if codec == "npy":
        return sequence(
            f"npy/{key}", (key % 5 + 1, 3 + key % 4), ("int16", "float32", "float64", "uint8", "int64")[key % 5]
        )
    if codec == "zarr":
        return sequence(f"zarr/{key}", (key % 4 + 2, 6), ("float32", "uint16", "float64", "int32")[key % 4])
    if codec == "hash":
        return b"" if shared == 6 else pseudo_bytes(f"hash/{shared}", 900 + 211 * shared)
    if codec == "blob":
        if is_big(store, key, big_every):
            return pseudo_bytes("blob/big", BIG_SIZE)
        if shared in (0, 3):
            return sequence(f"blob/{shared}", (2, 5 + shared), ("float64", "int32")[shared % 2])
        return b"" if shared == 5 else pseudo_bytes(f"blob/{shared}", 1200 + 101 * shared)
    if codec == "attach":
        return f"att{shared}.dat", b"" if shared == 4 else pseudo_bytes(f"attach/{shared}", 700 + 57 * shared)
    raise ValueError(f"unknown field {name}")


def tag_of(table: str, key: int) -> str:
    """The plain column every row carries."""
    return f"{table}/{key}"


def field_names(stores: list[str] | tuple[str, ...]) -> list[str]:
    """Every staged field of the soak's tables: one per codec and store."""
    return [f"{codec}_{store}" for store in stores for codec in CODECS]


def definition(stores: list[str] | tuple[str, ...]) -> str:
    """The tables' definition: a key, a tag and a nullable field of every codec on each store."""
    lines = ["k : int32", "---", "tag = null : varchar(64)"]
    for name in field_names(stores):
        codec, store = name.split("_", 1)
        lines.append(f"{name} = null : <{DECLARED[codec]}@{store}>")
    return "\n".join(lines)


def declare_tables(schema: Any, stores: list[str]) -> dict[str, Any]:
    """The soak's tables in ``schema`` (declared if missing)."""
    import datajoint as dj

    return {name: schema(type(name, (dj.Manual,), {"definition": definition(stores)})) for name in TABLES}


# ---------------------------------------------------------------- shared state between the processes


class Shared:
    """Lock-free shared memory: each process writes only its own row of ``stats`` and its own slot of ``done``.

    No lock is ever held, so a process killed at any instant cannot leave the others waiting.
    """

    def __init__(self, slots: int, writers: int) -> None:
        self.stats = RawArray("q", slots * len(STATS))
        self.done = RawArray("q", max(1, writers))
        self.stop = RawValue("b", 0)

    def add(self, slot: int, name: str, count: int = 1) -> None:
        self.stats[slot * len(STATS) + STAT[name]] += count

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


# ---------------------------------------------------------------- writers


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
    names = field_names(stores)
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
        choices = [s for s in STEP_FAULTS if s not in ("writer.promote", "writer.dedup") or codecs & set(HASHED)]
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
        if fault == "cut" and cut_while_committing(self.table, self.plan.rows[0].key, hold):
            self.shared.add(self.slot, "commit_cuts")


def cut_while_committing(table: Any, key: int, hold: float) -> bool:
    """At ``writer.commit``: another session takes ``key`` (``BEGIN; INSERT``), and a thread cuts this writer's
    connection once its commit statement waits for that row lock, then rolls the other session back after
    ``hold`` seconds. The statement lives on in the server (unless ``client_connection_check_interval``
    ends it) and commits once the lock is free: the writer must wait for it before it decides anything.
    True if the cut happened; False if the key could not be taken (a row holds it, or another writer's
    commit), when nothing is done."""
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
        return False

    def cut() -> None:
        try:
            waiting = "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted"
            deadline = time.monotonic() + 10
            while not (blocked := holder.query(waiting, (writer_pid,)).fetchone()[0]) and time.monotonic() < deadline:
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

    threading.Thread(target=cut, name="soak-cut", daemon=True).start()
    return True


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
            except SoakFault:
                if not plan.catch_in_batch:
                    raise
        accepted = len(batch)
    shared.add(slot, "rows_committed", accepted)


def is_conflict(error: BaseException) -> bool:
    """A database conflict between concurrent transactions (a deadlock PostgreSQL broke): a refusal, not a bug."""
    text = f"{type(error).__name__}: {error}".lower()
    return "deadlock detected" in text


def writer_main(
    slot: int, incarnation: int, config: SoakConfig, services: Services, schema_name: str, shared: Any
) -> None:
    """A writer process: operations until its share of the budget is used."""
    global _current
    from datajoint.errors import DuplicateError
    from datajoint.hash_registry import get_store_backend

    from dj_staged import steps
    from dj_staged.session.commit import is_connection_error

    try:
        _schema, tables = open_schema(services, schema_name, app_name(schema_name))
        with contextlib.ExitStack() as stack:
            for step in steps.WRITER_STEPS:
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
                plan = plan_op(rng, config, services.store_names)
                _current = Op(plan, shared, slot, tables[plan.table], rng)
                try:
                    run_op(tables, plan, _current, shared, slot, config.big_every)
                except DuplicateError:
                    shared.add(slot, "refused")
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
                    _current = None
    except BaseException:
        record(services, "errors", f"writer{slot}: {traceback.format_exc()}")
        raise


# ---------------------------------------------------------------- deleters and collectors


def idle() -> None:
    """Let the writers get ahead (deleters and collectors pace themselves on their operation count)."""
    time.sleep(0.005)


def deleter_main(slot: int, config: SoakConfig, services: Services, schema_name: str, shared: Any) -> None:
    """A deleter process: deletes random committed rows, about ``delete_share`` per writer operation.

    Before it deletes a row it fetches and checks every field, so rows that do not live to the end of the
    soak are verified too.
    """
    import shutil

    import datajoint as dj

    try:
        schema, tables = open_schema(services, schema_name, app_name(schema_name))
        dj.config["safemode"] = False
        logging.getLogger("datajoint").setLevel(logging.WARNING)  # no line per deleted row
        names = field_names(services.store_names)
        downloads = Path(services.workdir) / f"downloads-deleter{slot}"
        rng = random.Random(f"{config.seed}:deleter:{slot}")
        per_deleter = config.delete_share / max(1, config.deleters)
        deleted = 0
        while not shared.stop.value:
            if deleted >= per_deleter * sum(shared.done):
                idle()
                continue
            deleted += 1
            table_name = rng.choice(TABLES)
            table = tables[table_name]
            keys = list(table.fetch("k"))
            if not keys:
                continue
            key = int(rng.choice(keys))
            for row in select_rows(schema.connection, table, names, key):
                problems = check_row(table_name, table, row, names, config.big_every, downloads)
                shutil.rmtree(downloads, ignore_errors=True)
                if not problems:
                    shared.add(slot, "verified_before_delete")
                elif len(table & {"k": key}):  # still there (another deleter may have removed it meanwhile)
                    record(services, "lost", f"{table_name} k={key} (checked before its deletion): {problems}")
            shared.add(slot, "deletes", (table & {"k": key}).delete())
    except BaseException:
        record(services, "errors", f"deleter{slot}: {traceback.format_exc()}")
        raise


def collector_main(slot: int, config: SoakConfig, services: Services, schema_name: str, shared: Any) -> None:
    """A collector process: ``collect(grace=0, dry_run=False)`` of each store in a loop (now and then default grace)."""
    import dj_staged.gc

    try:
        schema, _tables = open_schema(services, schema_name, app_name(schema_name))
        rng = random.Random(f"{config.seed}:collector:{slot}")
        last = -COLLECT_PACE
        while not shared.stop.value:
            if sum(shared.done) < last + COLLECT_PACE:
                idle()
                continue
            last = sum(shared.done)
            for store in services.store_names:
                default = rng.random() < 0.15
                grace = dj_staged.gc.DEFAULT_GRACE if default else 0
                try:
                    report = dj_staged.gc.collect(schema, store=store, grace=grace, dry_run=False)
                except Exception:
                    shared.add(slot, "unexpected")
                    record(services, "errors", f"collector{slot}: {traceback.format_exc()}")
                    continue
                shared.add(slot, "collections")
                shared.add(slot, "collections_default_grace", int(default))
                shared.add(slot, "collected", report.deleted)
                if report.errors:
                    shared.add(slot, "unexpected")
                    record(services, "errors", f"collector{slot}: collection errors on {store}: {report.errors}")
    except BaseException:
        record(services, "errors", f"collector{slot}: {traceback.format_exc()}")
        raise


def app_name(schema_name: str) -> str:
    """The application name of every database session the soak's processes open."""
    return f"dj-soak-{schema_name}"


# ---------------------------------------------------------------- the orchestrator


def process_state(pid: int) -> str:
    """The state letter of process ``pid`` (``T``: stopped by a signal); ``X`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0]
    except OSError:  # gone, or being torn down
        return "X"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.01)


class Orchestrator:
    """Starts the processes, restarts killed writers, handles pauses, kills writers now and then."""

    def __init__(self, config: SoakConfig, services: Services, schema: Any) -> None:
        import multiprocessing

        self.config = config
        self.services = services
        self.schema = schema
        self.context = multiprocessing.get_context("spawn")
        slots = config.writers + config.deleters + config.collectors
        self.shared = Shared(slots, config.writers)
        self.writers: list[Any] = [None] * config.writers
        self.incarnations = [0] * config.writers
        self.others: list[Any] = []
        self.rng = random.Random(f"{config.seed}:orchestrator")
        self.counts = {"orchestrator_kills": 0, "restarts": 0, "pause_collections": 0, "final_collections": 0}
        self.collected = 0
        self.errors: list[str] = []

    def _start_writer(self, slot: int) -> None:
        args = (slot, self.incarnations[slot], self.config, self.services, self.schema.database, self.shared)
        process = self.context.Process(target=writer_main, args=args, name=f"soak-writer-{slot}", daemon=True)
        process.start()
        self.writers[slot] = process

    def start(self) -> None:
        c = self.config
        for slot in range(c.writers):
            self._start_writer(slot)
        for index in range(c.deleters):
            self._start_other(deleter_main, c.writers + index, f"soak-deleter-{index}")
        for index in range(c.collectors):
            self._start_other(collector_main, c.writers + c.deleters + index, f"soak-collector-{index}")

    def _start_other(self, target: Callable[..., None], slot: int, name: str) -> None:
        args = (slot, self.config, self.services, self.schema.database, self.shared)
        process = self.context.Process(target=target, args=args, name=name, daemon=True)
        process.start()
        self.others.append(process)

    def collect_all(self) -> int:
        """One ``grace=0`` collection of every store, here; returns the objects deleted."""
        import dj_staged.gc

        deleted = 0
        for store in self.services.store_names:
            report = dj_staged.gc.collect(self.schema, store=store, grace=0, dry_run=False)
            if report.errors:
                self.errors.append(f"orchestrator collection on {store}: {report.errors}")
            deleted += report.deleted
        self.collected += deleted
        return deleted

    def run(self) -> None:
        """Until every writer has used its share: restart the killed, serve the stopped, kill now and then."""
        c = self.config
        deadline = time.monotonic() + c.timeout
        every = c.kill_every
        next_kill = self.rng.randint(max(1, every // 2), max(1, every * 3 // 2)) if every else None
        finished = [False] * c.writers
        while not all(finished):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the soak did not finish within {c.timeout} s")
            for slot, process in enumerate(self.writers):
                if finished[slot]:
                    continue
                if process.exitcode is not None:
                    process.join()
                    if process.exitcode != -signal.SIGKILL and process.exitcode != 0:
                        self.errors.append(f"writer {slot} exited with code {process.exitcode}")
                    if self.shared.done[slot] >= c.quota(slot):
                        finished[slot] = True
                    else:
                        self.incarnations[slot] += 1
                        self.counts["restarts"] += 1
                        self._start_writer(slot)
                elif process_state(process.pid) == "T":
                    self.collect_all()
                    self.counts["pause_collections"] += 1
                    os.kill(process.pid, signal.SIGCONT)
            if next_kill is not None and sum(self.shared.done) >= next_kill:
                alive = [p for slot, p in enumerate(self.writers) if not finished[slot] and p.exitcode is None]
                if alive:
                    victim = self.rng.choice(alive)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(victim.pid, signal.SIGKILL)
                    self.counts["orchestrator_kills"] += 1
                next_kill += self.rng.randint(max(1, every // 2), max(1, every * 3 // 2))
            time.sleep(0.005)
        self.shared.stop.value = 1
        for process in self.others:
            process.join(max(1.0, deadline - time.monotonic()))
            if process.exitcode is None:
                raise TimeoutError(f"{process.name} did not stop")
            if process.exitcode != 0:
                self.errors.append(f"{process.name} exited with code {process.exitcode}")

    def kill_all(self) -> None:
        """After a failure: SIGKILL every process still running (they are all ours)."""
        for process in [*self.writers, *self.others]:
            if process is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.join(10)

    def stats(self) -> dict[str, int]:
        totals = {name: self.shared.total(name) for name in STATS}
        totals.update(self.counts)
        totals["collected"] += self.collected
        return totals


# ---------------------------------------------------------------- verification


def same_array(found: Any, wanted: np.ndarray) -> bool:
    found = np.asarray(found)
    return found.dtype == wanted.dtype and found.shape == wanted.shape and bool(np.array_equal(found, wanted))


def check_field(table: Any, key: int, name: str, big_every: int, downloads: Path) -> str | None:
    """Fetch field ``name`` of row ``key``; None if it holds exactly what it must, else why not."""
    import datajoint as dj
    import zarr

    codec = name.split("_", 1)[0]
    wanted = expected(name, key, big_every)
    with dj.config.override(download_path=str(downloads)):
        value = (table & {"k": key}).fetch1(name)
    if codec == "obj":
        kind, content = wanted
        if kind == "file":
            ok = not value.is_dir and value.read() == content
        elif kind == "dir":
            fsmap = value.fsmap
            ok = value.is_dir and {path: fsmap[path] for path in fsmap} == content
        else:
            ok = value.is_dir and same_array(zarr.open_array(value.fsmap, mode="r")[:], content)
    elif codec == "npy":
        ok = same_array(value.load(), wanted)
    elif codec == "zarr":
        ok = same_array(value[:], wanted)
    elif codec in ("hash", "blob"):
        ok = same_array(value, wanted) if isinstance(wanted, np.ndarray) else value == wanted
    else:
        filename, content = wanted
        path = Path(value)
        ok = path.name == filename and path.read_bytes() == content
    return None if ok else f"content differs from what key {key} determines"


def select_rows(connection: Any, table: Any, names: list[str], key: int | None = None) -> list[tuple]:
    """``(k, tag, *fields)`` of every row of ``table`` (or of the row ``key``), each field as the database holds it."""
    columns = ", ".join(["k", "tag", *names])
    where = "" if key is None else f" WHERE k = {int(key)}"
    return connection.query(f"SELECT {columns} FROM {table.full_table_name}{where} ORDER BY k").fetchall()


def check_row(table_name: str, table: Any, row: tuple, names: list[str], big_every: int, downloads: Path) -> list[str]:
    """Fetch every non-null field of ``row`` and compare it with what its key determines; what differs, and why."""
    k, tag, *values = row
    problems = [] if tag == tag_of(table_name, k) else [f"tag {tag!r}"]
    for name, raw in zip(names, values, strict=True):
        if raw is None:
            continue
        try:
            problem = check_field(table, k, name, big_every, downloads / f"{table_name}-{k}-{name}")
        except Exception as error:
            problem = f"fetch failed: {type(error).__name__}: {error}"
        if problem:
            problems.append(f"{name} ({raw.get('path') if isinstance(raw, dict) else raw}): {problem}")
    return problems


def verify_rows(
    schema: Any, tables: dict[str, Any], stores: list[str], big_every: int, downloads: Path
) -> tuple[int, list[str]]:
    """Fetch every non-null field of every row and compare; return rows verified and each lost row with why."""
    from datajoint.hash_registry import get_store_backend

    for store in stores:
        get_store_backend(store).fs.invalidate_cache()
    names = field_names(stores)
    verified, lost = 0, []
    for table_name, table in tables.items():
        for row in select_rows(schema.connection, table, names):
            problems = check_row(table_name, table, row, names, big_every, downloads)
            if problems:
                lost.append(f"{table_name} k={row[0]}: " + "; ".join(problems))
            else:
                verified += 1
    return verified, lost


def stored_files(name: str, spec: dict[str, Any]) -> list[str]:
    """Every file in a store, relative to its location (a local store read with ``os``, so independently)."""
    if spec["protocol"] == "file":
        root = Path(spec["location"])
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    import datajoint as dj

    from dj_staged.stores import resolve_store

    return sorted(resolve_store(name, dj.config).list_files(""))


def leftovers(schema: Any, stores: dict[str, Any]) -> list[str]:
    """What no row references: files in the schema's sections, staging, leases, incomplete uploads, anything else."""
    from dj_staged._datajoint import is_covered
    from dj_staged.references import referenced_paths

    name = schema.database
    referenced = referenced_paths([schema])
    found = []
    for store, spec in stores.items():
        if store == "default":
            continue
        for path in stored_files(store, spec):
            if path.startswith((f"_schema/{name}/", f"_hash/{name}/")):
                if not is_covered(path, referenced):
                    found.append(f"{store}: {path} (no row references it)")
            elif path.startswith((f"_staging/{name}/", f"_staging/_leases/{name}/")):
                found.append(f"{store}: {path} (staging or lease left)")
            else:
                found.append(f"{store}: {path} (outside the schema's sections)")
        found += [f"{store}: incomplete upload {name}" for name in incomplete_uploads(store)]
    return found


def incomplete_uploads(store: str) -> list[str]:
    """Uploads begun in ``store`` and never completed or aborted, where the service can list them."""
    import datajoint as dj

    from dj_staged.stores import resolve_store

    staged = resolve_store(store, dj.config)
    return sorted(staged.incomplete_uploads("")) if staged.supports_listing_incomplete_uploads else []


def read_records(workdir: Path, kind: str) -> list[str]:
    """The entries the processes recorded in their logs of ``kind``."""
    entries = []
    for log in sorted(workdir.glob(f"{kind}-*.log")):
        entries += [entry.strip() for entry in log.read_text().split("\n\x00\n") if entry.strip()]
    return entries


# ---------------------------------------------------------------- one soak


def run_soak(config: SoakConfig, services: Services) -> SoakResult:
    """Run the workload, then verify every row and what is left in the stores."""
    import datajoint as dj

    from dj_staged.testing.services import PostgresInfo

    started = time.monotonic()
    workdir = Path(services.workdir)
    saved_stores = dict(dj.config.stores)
    dj.config.stores = services.stores
    dj.config.database.backend = "postgresql"
    pg = PostgresInfo(**services.db)
    connection = dj.Connection(pg.host, pg.user, pg.password, pg.port)
    schema = dj.Schema(f"soak_{config.seed}_{uuid.uuid4().hex[:8]}", connection=connection)
    orchestrator: Orchestrator | None = None
    try:
        tables = declare_tables(schema, services.store_names)
        orchestrator = Orchestrator(config, services, schema)
        orchestrator.start()
        try:
            orchestrator.run()
        except BaseException:
            orchestrator.kill_all()
            raise
        name = app_name(schema.database)
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        wait_until(lambda: connection.query(query, args=(name,)).fetchone()[0] == 0, 60, "the workers' sessions ending")
        downloads = workdir / "downloads"
        verified, lost = verify_rows(schema, tables, services.store_names, config.big_every, downloads)
        orchestrator.collect_all()
        orchestrator.counts["final_collections"] += 1
        left = leftovers(schema, services.stores)
        verified_after, lost_after = verify_rows(schema, tables, services.store_names, config.big_every, downloads)
        lost += [f"after the final collection: {entry}" for entry in lost_after if entry not in lost]
        result = SoakResult(
            stats=orchestrator.stats(),
            rows_verified=min(verified, verified_after),
            lost=read_records(workdir, "lost") + lost,
            leftovers=left,
            errors=orchestrator.errors + read_records(workdir, "errors"),
            seconds=time.monotonic() - started,
        )
        if result.ok:
            schema.drop(prompt=False)
        return result
    finally:
        dj.config.stores = saved_stores
        connection.close()


@contextlib.contextmanager
def own_services(stores: list[str], workdir: Path) -> Iterator[Services]:
    """An embedded PostgreSQL, the emulators the stores want (moto S3, fake-gcs-server, Azurite) and a local store
    in ``workdir``."""
    from dj_staged.testing import services

    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(services.embedded_postgres(workdir))
        s3 = stack.enter_context(services.moto_s3_server()) if "s3" in stores else None
        gcs = stack.enter_context(services.fake_gcs_server(workdir)) if "gcs" in stores else None
        if gcs is not None:
            stack.enter_context(services.gcs_emulator_environment(gcs))  # the writers inherit it
        azure = stack.enter_context(services.azurite_server(workdir)) if "azure" in stores else None
        specs = store_specs(stores, workdir, s3, gcs, azure)
        yield Services(db=dataclasses.asdict(pg), stores=specs, workdir=str(workdir))


def store_specs(
    stores: list[str] | tuple[str, ...], workdir: Path, s3: Any = None, gcs: Any = None, azure: Any = None
) -> dict[str, Any]:
    """``dj.config.stores`` for the soak: ``local`` in ``workdir``, the others in a new bucket or container of
    their emulator."""
    from dj_staged.testing import services

    specs: dict[str, Any] = {"default": stores[0]}
    for name in stores:
        if name == "local":
            location = workdir / "local-store"
            location.mkdir(parents=True, exist_ok=True)
            specs[name] = {"protocol": "file", "location": str(location)}
        elif name == "s3":
            spec = services.s3_store_spec(s3, f"soak-{uuid.uuid4().hex[:12]}")
            s3_client(spec).create_bucket(Bucket=spec["bucket"])
            specs[name] = spec
        elif name == "gcs":
            bucket = f"soak-{uuid.uuid4().hex[:12]}"
            services.create_gcs_bucket(gcs, bucket)
            specs[name] = services.gcs_store_spec(gcs, bucket)
        elif name == "azure":
            container = f"soak-{uuid.uuid4().hex[:12]}"
            services.create_azure_container(azure, container)
            specs[name] = services.azure_store_spec(azure, container)
        else:
            raise ValueError(f"unknown store {name!r}: local, s3, gcs or azure")
    return specs


def parse_args(argv: list[str] | None = None) -> tuple[SoakConfig, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="writer operations in all (default 2000)")
    parser.add_argument(
        "--stores", default="local,s3", help="comma-separated: local, s3, gcs, azure (default local,s3)"
    )
    parser.add_argument("--writers", type=int, default=3, help="writer processes (default 3)")
    parser.add_argument("--deleters", type=int, default=1, help="deleter processes (default 1)")
    parser.add_argument("--collectors", type=int, default=2, help="collector processes (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--keys", type=int, default=0, help="primary keys per table (default ops/4, at least 24)")
    parser.add_argument("--kill-every", type=int, default=40, help="orchestrator kills about every N ops (0: never)")
    parser.add_argument("--big-every", type=int, default=50, help="every Nth key has a 17 MiB <blob@s3> (0: none)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = parser.parse_args(argv)
    config = SoakConfig(
        ops=args.ops,
        stores=tuple(s.strip() for s in args.stores.split(",") if s.strip()),
        writers=args.writers,
        deleters=args.deleters,
        collectors=args.collectors,
        seed=args.seed,
        keys=args.keys,
        kill_every=args.kill_every,
        big_every=args.big_every,
        timeout=args.timeout,
    )
    return config, args.keep


class MotoErrors(logging.Filter):
    """Counts, instead of printing, the tracebacks moto's server logs when it fails a request.

    Its in-memory bucket is not thread-safe: a listing that runs while another request deletes a key
    can fail with a ``KeyError`` (HTTP 500), which the S3 client retries. A request that still failed
    after its retries would reach the soak as an unexpected error.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Error on request"):
            self.count += 1
            return False
        return True


def main(argv: list[str] | None = None) -> int:
    """Run a soak with its own services; print the figures; 0 if nothing was lost or left."""
    config, keep = parse_args(argv)
    moto_errors = MotoErrors()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    logging.getLogger("werkzeug").addFilter(moto_errors)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    workdir = Path(tempfile.mkdtemp(prefix="dj-staged-soak-"))
    try:
        with own_services(list(config.stores), workdir) as services:
            result = run_soak(config, services)
    finally:
        if not keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    print(result.summary(config))
    if moto_errors.count:
        print(f"  moto: {moto_errors.count} requests failed inside moto's server (HTTP 500, retried by the client)")
    for title, entries in (("LOST", result.lost), ("LEFT", result.leftovers), ("ERROR", result.errors)):
        for entry in entries:
            print(f"{title}: {entry}")
    if keep:
        print(f"work folder: {workdir}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
