"""The rows, targets and rounds, set before measuring (``DJ_STAGED_BENCH_ROUNDS`` caps them). A ratio pairs a row's
rounds with its baseline's one by one, so both run in one *block*: a round runs block after block, each back to back."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from functools import partial
from typing import Any

from .rows import GC_OBJECTS, GIB, SEGMENT, Work
from .rows import Context as C

# rows compared with the plain write (well under a second a GiB, one page-fault stall decides a pair), and
FAST = MD5 = 11  # hash-addressed rows (they do their baselines' work: their ratio is noise unless paired often)
ZARR = 7  # Zarr's thread pools spread the most of the longer rows on 2 shared cores
ONCE = 1  # DataJoint's insert1 rows (tens of seconds, GiBs of memory), the gc row
SCALING, WRITERS = 2, 3  # each size twice, the faster kept, so one stall does not bend the line; concurrent writers
DEFAULT, OBJECT_ROUNDS = 5, 7  # the many-rows block; the object stores' rows (their emulators share the 2 cores)


@dataclass(frozen=True)
class Target:
    """A check on one figure: ``metric`` against ``limit``; ``baseline`` is the row a ratio or speed-up uses."""

    metric: str  # a key of bench.report.CHECKS
    limit: float
    baseline: str | None = None


@dataclass(frozen=True)
class Row:
    """One measurement: what runs, what it is compared with, the targets it is held to, its rounds."""

    key: str
    label: str
    group: str  # the report's section
    block: str  # rows run back to back in each round
    work: Work
    rounds: int
    baseline: str | None = None  # key of the row in the ratio column
    prepare: Work | None = None  # before the clock; its result is ctx.value
    store: str | None = None  # the table is declared on this store before the clock (s3: a bucket on moto)
    zarr: bool = False  # Zarr is warmed up before the clock
    datajoint: str | None = None  # key of DataJoint's row for the same content (speed-up column)
    targets: tuple[Target, ...] = ()
    harness_fsync: bool = False  # the harness fsyncs the local store inside the clock
    gib: float | None = None  # the scaling rows' payload; None: the run's
    writers: int = 0  # processes writing at once, each the payload


RSS = Target("rss", 128)  # MiB
W, M, Z = "plain_write", "write_md5", "plain_zarr"
HASHED = (Target("ratio", 1.10, "md5"),)  # MD5 alone is the floor: 0.85 x write + MD5, once the write overlaps syncs
ROWS_GROUP, S3 = "many small <npy@> rows", "S3 (moto on 127.0.0.1)"
CHECKED = "dj_insert1_checked"  # the durable loop with a block's refusal before the first byte: one more round trip
EMULATORS = {"s3": S3, "gcs": "GCS (fake-gcs-server on 127.0.0.1)", "azure": "Azure (Azurite on 127.0.0.1)"}
LIBRARY = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}
EMULATED_GIB = 0.25  # GCS and Azure rows: fake-gcs-server takes a resumable upload in time growing with its size
raw, payload, report, content = (partial(C.into, field=name) for name in ("raw", "payload", "report", "content"))
npy, placed = partial(C.into, field="waveform"), partial(C.into, field="placed")
sized, named = partial(C.into, field="payload", sized=True), partial(C.into, field="report", filename="payload.bin")
zarr_raw, zarr_frames = partial(C.zarr_into, field="raw"), partial(C.zarr_into, field="frames")


def one(field: str, prepare: Work) -> Work:
    """Prepared: one row whose ``field`` holds what ``prepare`` makes (``insert`` of it is ``insert1``'s path)."""
    return lambda ctx: [{"bench_id": 1, field: prepare(ctx)}]


def dj(key: str, label: str, block: str, work: Work, rounds: int, baseline: str | None, **kw: Any) -> Row:
    """DataJoint's own path for the same content; it does not fsync, so the harness does."""
    kw = {"group": "DataJoint 2.3.5", "store": "main", **kw}
    return Row(key, label, kw.pop("group"), block, work, rounds, baseline, harness_fsync=True, **kw)


def ours(key: str, label: str, block: str, work: Work, rounds: int, baseline: str, limit: float, **kw: Any) -> Row:
    """dj-staged, held to ``limit`` × ``baseline``, RSS and ``extra``; no harness fsync: it makes its writes durable."""
    kw = {"group": "dj-staged", "store": "main", **kw}
    targets = (RSS, Target("ratio", limit, baseline), *kw.pop("extra", ()))
    return Row(key, label, kw.pop("group"), block, work, rounds, baseline, targets=targets, **kw)


# fmt: off
def object_store_rows(s: str) -> list[Row]:
    """``s``'s ``put_file`` and Zarr on its ``FSMap``, ours against them (downloads: counted on S3, others in tests)."""
    p, z, n, none = f"{s}_put", f"{s}_plain_zarr", OBJECT_ROUNDS, (Target("downloaded", 0),) if s == "s3" else ()
    kw = {"group": EMULATORS[s], "store": s, "gib": None if s == "s3" else EMULATED_GIB}
    return [Row(p, f"{LIBRARY[s]} put_file", block=s, work=C.object_put, rounds=n, prepare=C.attachment, **kw),
            Row(z, f"plain zarr on a {LIBRARY[s]} FSMap", block=s, work=C.plain_zarr, rounds=n, zarr=True, **kw),
            ours(f"{s}_object", f"staged <object@> file ({s})", s, raw, n, p, 1.10, **kw),
            ours(f"{s}_filepath", f"staged <filepath@> file, placed by a copy ({s})", s, placed, n, p,
                 1.10 if s == "s3" else 4.0, **kw),  # the target is S3's; the emulators' copies are slower
            ours(f"{s}_blob_sized", f"staged <blob@> bytes, size=N ({s})", s, sized, n, p, 1.10, extra=none, **kw),
            ours(f"{s}_hash", f"staged <hash@> ({s})", s, content, n, p, 1.10, extra=none, **kw),
            ours(f"{s}_zarr", f"staged <zarr@> ({s})", s, zarr_frames, n, z, 1.10, zarr=True, **kw),
            *([Row(f"{s}_resume", f"staged <object@> file resumed at 90 % ({s})", S3, s, partial(C.resume, field="raw"),
                   n, f"{s}_object", store=s, prepare=partial(C.interrupted, field="raw"),
                   targets=(RSS, Target("uploaded", 0.10)))] if s == "s3" else [])]


ROWS: list[Row] = [
    Row(W, "plain write, write-back overlapped", "baselines", "write", C.plain_file, FAST),
    Row("device", "direct-I/O write (device ceiling)", "baselines", "write", C.direct_write, FAST, W),
    Row(M, "write + MD5", "baselines", "md5", partial(C.plain_file, md5=True), MD5, W),
    Row("md5", "MD5 only (in memory)", "baselines", "md5", C.md5_only, MD5, M),
    Row(Z, "plain zarr", "baselines", "zarr", C.plain_zarr, ZARR, W, zarr=True),
    dj("dj_npy", "insert1 <npy@> (array in memory)", "write", C.dj_insert, ONCE, W, prepare=one("waveform", C.array)),
    dj("dj_blob", "insert1 <blob@> (float64 array in memory)", "md5", C.dj_insert, ONCE, M,
       prepare=one("payload", C.array)),
    dj("dj_attach", "insert1 <attach@> (file)", "md5", C.dj_insert, ONCE, M, prepare=one("report", C.attachment)),
    dj("dj_zarr", "insert1 <zarr@> (array in memory)", "zarr", C.dj_insert, ONCE, Z, zarr=True,
       prepare=one("frames", C.stacked_frames)),
    dj("dj_staged_object", "DataJoint's staged insert <object@> (file)", "write", C.dj_staged_object, FAST, W),
    ours("object_file", "staged <object@> (file)", "write", raw, FAST, W, 1.05, datajoint="dj_staged_object"),
    ours("object_directory", "staged <object@> (Zarr directory)", "zarr", zarr_raw, ZARR, Z, 1.10, zarr=True),
    ours("npy", "staged <npy@>", "write", npy, FAST, W, 1.05, datajoint="dj_npy"),
    ours("filepath", "staged <filepath@> file (placed by a hard link)", "write", placed, FAST, W, 1.10),
    ours("blob_sized", "staged <blob@> bytes, open(size=N)", "md5", sized, MD5, M, 1.15, extra=HASHED),
    ours("blob_unsized", "staged <blob@> bytes, no size (one re-read)", "md5", payload, MD5, M, 1.15),  # >= write+MD5
    ours("blob_array", "staged <blob@> float64 array (streamed)", "md5", C.staged_blob_array, MD5, M, 1.15,
         datajoint="dj_blob", extra=(*HASHED, Target("speedup", 5.0, "dj_blob"))),
    ours("attach", "staged <attach@> (set_filename first)", "md5", named, MD5, M, 1.15, datajoint="dj_attach",
         extra=HASHED),
    ours("hash", "staged <hash@>", "md5", content, MD5, M, 1.15, extra=HASHED),
    ours("resume_object", "staged <object@> (file) resumed at 90 %", "write", partial(C.resume, field="raw"), FAST,
         "object_file", 0.15, prepare=partial(C.interrupted, field="raw")),
    ours("resume_hash", "staged <hash@> resumed at 90 %", "md5", partial(C.resume, field="content"), MD5, "hash", 0.15,
         prepare=partial(C.interrupted, field="content")),
    ours("zarr", "staged <zarr@>", "zarr", zarr_frames, ZARR, Z, 1.10, zarr=True, datajoint="dj_zarr"),
    dj("dj_insert", "DataJoint insert(list)", "rows", C.dj_insert, DEFAULT, None, group=ROWS_GROUP, prepare=C.segments),
    dj("dj_insert1_loop", "DataJoint insert1 loop", "rows", partial(C.dj_insert, loop=True), DEFAULT, None,
       group=ROWS_GROUP, prepare=C.segments),
    Row("dj_insert1_durable", "DataJoint insert1 loop made durable", ROWS_GROUP, "rows",
        partial(C.dj_insert, loop=True, durable=True), DEFAULT, store="main", prepare=C.segments),
    ours("staged_batch", "one staged_insert batch", "rows", C.staged_batch, DEFAULT, "dj_insert", 1.20,
         group=ROWS_GROUP, extra=(Target("rss_per_row", 4.0),)),
    Row(CHECKED, "DataJoint insert1 loop made durable, each key checked first", ROWS_GROUP, "rows",
        partial(C.dj_insert, loop=True, durable=True, checked=True), DEFAULT, store="main", prepare=C.segments),
    ours("staged_blocks", "staged_insert1 blocks", "rows", C.staged_blocks, DEFAULT, "dj_insert1_durable", 1.20,
         group=ROWS_GROUP, extra=(Target("ratio", 1.75, "dj_insert1_loop"), Target("ratio", 1.20, CHECKED))),
    *(Row(f"writers@{n}", f"{n} writer{'s' * (n > 1)} staging <hash@> at once", "concurrent writers", "writers",
          C.run_writers, WRITERS, store="main", prepare=partial(C.fork_writers, n=n), writers=n,
          targets=(Target("throughput", 1.7, "writers@1"),) if n == 2 else ()) for n in (1, 2, 4)),
    *(row for store in EMULATORS for row in object_store_rows(store)),
    Row("gc_s3", f"gc.collect dry run, {GC_OBJECTS:,} objects (moto)", S3, "gc", C.gc_collect, ONCE, store="s3",
        prepare=C.gc_store, targets=(Target("seconds", 5.0), Target("listings", 2))),
]
SCALED = (("plain_zarr", "plain zarr", C.plain_zarr, None), ("blob_array", "staged <blob@> array", C.staged_blob_array,
          None), ("zarr", "staged <zarr@>", zarr_frames, "plain_zarr"))  # key, label, work, baseline
# fmt: on


def scaling_sizes() -> list[float]:
    """GiB of the scaling rows (``DJ_STAGED_BENCH_SCALING_GIB``, default ``1,2,4``; empty: none)."""
    return [float(p) for p in os.environ.get("DJ_STAGED_BENCH_SCALING_GIB", "1,2,4").split(",") if p.strip()]


def all_rows() -> list[Row]:
    """Every row in table order: ``ROWS``, then each of ``SCALED`` at each size (ours: flat RSS, flat time per GiB)."""
    sizes, rows = scaling_sizes(), list(ROWS)
    for key, label, work, base in SCALED:
        for gib in sizes:
            growth = [Target("growth", 1.10, f"{key}@{sizes[0]:g}")] if gib != sizes[0] else []
            rows.append(Row(f"{key}@{gib:g}", f"{label}, {gib:g} GiB", "scaling", "scaling", work, SCALING,
                            base and f"{base}@{gib:g}", store="main", zarr="zarr" in key, gib=gib,
                            targets=(RSS, *growth) if key != "plain_zarr" else ()))  # fmt: skip
    return rows


def find(key: str) -> Row:
    """The row named ``key``."""
    return next(row for row in all_rows() if row.key == key)


def rounds(row: Row, cap: int | None = None) -> int:
    """How many times ``row`` runs: its declared rounds, at most ``cap``."""
    return min(row.rounds, cap) if cap else row.rounds


def schedule(rows: list[Row], cap: int | None = None) -> list[tuple[int, Row]]:
    """``(round, row)`` in run order: block after block; from round 2 on, each block shuffled (seeded)."""
    blocks, plan = list(dict.fromkeys(row.block for row in rows)), []
    for n in range(1, max((rounds(row, cap) for row in rows), default=0) + 1):
        for name in blocks:
            order = [row for row in rows if row.block == name and n <= rounds(row, cap)]
            if n > 1:
                random.Random(f"{n}:{name}").shuffle(order)
            plan += [(n, row) for row in order]
    return plan


def payload_bytes(row: Row, gib: float, batch_rows: int) -> int:
    """Bytes the row writes: ``batch_rows`` KiB for the many-rows block, 1,000 KiB for gc, else ``gib``."""
    small = {"rows": batch_rows, "gc": GC_OBJECTS}.get(row.block)
    return small * SEGMENT.nbytes if small else int((row.gib or gib) * GIB) * max(1, row.writers)
