"""One row's context, with every row's work and preparation as methods. Byte rows write incompressible float64 (4 MiB
chunks), Zarr rows uint16 frames; each row's process draws its own: this VM rewrites blocks it holds ~50 % slower."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import queue
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datajoint as dj
import numpy as np
import zarr
from datajoint.hash_registry import get_store_backend

import dj_staged.gc  # binds dj_staged too
from dj_staged import steps
from dj_staged.durability import fsync_path
from dj_staged.testing.services import connect_datajoint, local_stores, object_store_spec

MIB, GIB, CHUNK, WRITEBACK = 1 << 20, 1 << 30, 4 << 20, 16  # write back every 16 chunks (64 MiB), as dj-staged
ROWS, SLAB = 512, (4 << 20) // (8 * 512)  # a Fortran-ordered (ROWS, SLAB) float64 slab is one chunk
FRAME, FRAME_BYTES = (1024, 1024), 2 << 20
SEGMENT, GC_OBJECTS = np.arange(256, dtype="float32"), 1000  # the many-rows block's 1 KiB array; the gc row's objects
Work = Callable[["Context"], Any]  # a row's work returns None or a dict of extra figures


def chunks(n: int, source: np.ndarray, start: int = 0) -> Iterator[np.ndarray]:
    """Chunks ``start`` to ``n`` cycled from ``source``, not copied."""
    return (source[i % len(source)] for i in range(start, n))


def frames(n: int) -> Iterator[np.ndarray]:
    """``n`` distinct uint16 frames made from four."""
    base = np.random.default_rng().integers(0, 65535, size=(4, *FRAME), dtype="uint16")
    return (base[i % 4] + np.uint16(i) for i in range(n))


def write_frames(target: Any, n: int) -> None:
    """A Zarr array of ``n`` frames at ``target`` (a path or a mapping), one chunk per frame, filled in order."""
    z = zarr.open(target, mode="w", shape=(n, *FRAME), chunks=(1, *FRAME), dtype="uint16")
    for i, frame in enumerate(frames(n)):
        z[i] = frame


COLUMNS = {"raw": "object", "waveform": "npy", "payload": "blob", "report": "attach", "content": "hash"}
COLUMNS |= {"frames": "zarr", "placed": "filepath"}  # the benchmark table's fields, each on the table's store


@dataclass
class Context:
    """One row's payload, services, folders (store ``main``, baselines' files, scratch) and, once declared, table."""

    nbytes: int
    folder: Path
    pg: Any
    emulators: dict[str, Any] = field(default_factory=dict)  # object store -> its emulator's S3/GCS/AzureInfo
    parent_pid: int = 0  # the process whose threads serve moto
    batch_rows: int = 0
    source: np.ndarray = field(default_factory=lambda: np.random.default_rng().standard_normal((4, CHUNK // 8)))
    schema: Any = None
    store: str = "main"
    bucket: str | None = None  # the object store's bucket (an Azure container)
    value: Any = None  # what the row's prepare made
    _table: Any = None

    def __post_init__(self) -> None:
        self.n, self.frames = max(1, self.nbytes // CHUNK), max(1, self.nbytes // FRAME_BYTES)
        self.store_root, self.plain_root, self.scratch = (self.folder / name for name in ("store", "plain", "scratch"))
        for path in (self.store_root, self.plain_root, self.scratch):
            path.mkdir(parents=True, exist_ok=True)

    def table(self, store: str = "main", schema: str | None = None) -> Any:
        """The table, every codec on ``store`` (``main``: local; else a new bucket), in ``schema`` or a new one."""
        if self._table is not None:
            return self._table
        stores = local_stores(self.store_root)
        if store != "main":
            self.store, self.bucket = store, f"bench-{uuid.uuid4().hex[:12]}"
            stores[store] = object_store_spec(self.emulators[store], self.bucket)
        name = schema or f"bench_{uuid.uuid4().hex[:10]}"
        self.schema = dj.Schema(name, connection=connect_datajoint(self.pg, stores))
        if self.bucket is not None:
            self.objfs().mkdir(self.bucket)
            self.objfs().pipe(f"{self.bucket}/warm-up", b"x")  # the client's session, event loop and connection
        body = "".join(f"{name} = null : <{codec}@{store}>\n" for name, codec in COLUMNS.items())
        self._table = self.schema(type("Bench", (dj.Manual,), {"definition": f"bench_id : int32\n---\n{body}"}))
        return self._table

    def objfs(self) -> Any:
        """DataJoint's filesystem for the object store: the one the staged inserts use."""
        return get_store_backend(self.store).fs

    def remove(self) -> None:
        """Drop the schema, delete the bucket's objects and the folders."""
        try:
            if self.schema is not None:
                self.schema.drop(prompt=False)
            if self.bucket is not None:
                self.objfs().rm(self.bucket, recursive=True)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def sync(self, root: Path, *, up_to: Path | None = None) -> None:
        """fsync every file and directory under ``root``, then each folder above it up to ``up_to``."""
        above = [p for p in root.parents if up_to is not None and (p == up_to or up_to in p.parents)]
        walked = [p for folder, _, files in os.walk(root) for p in (*(os.path.join(folder, f) for f in files), folder)]
        for path in [*walked, *above]:
            fsync_path(path)

    def plain_file(self, md5: bool = False) -> None:
        """Baseline: the fastest durable write found here, write-back overlapped as dj-staged's; MD5 too if ``md5``."""
        digest = hashlib.md5()
        with open(self.plain_root / "payload.bin", "wb") as f, ThreadPoolExecutor(1) as writeback:
            for i, chunk in enumerate(chunks(self.n, self.source), start=1):
                if md5:
                    digest.update(chunk)
                f.write(chunk)
                if i % WRITEBACK == 0:
                    writeback.submit(os.fdatasync, f.fileno())
        self.sync(self.plain_root)

    def direct_write(self) -> None:
        """The device's ceiling: ``dd`` writing the payload's size around the page cache in 4 MiB blocks, fsynced."""
        dd = ["dd", "if=/dev/zero", f"of={self.plain_root / 'direct.bin'}", "bs=4M", f"count={self.n}", "oflag=direct"]
        subprocess.run([*dd, "conv=fsync"], check=True, capture_output=True)
        self.sync(self.plain_root)

    def md5_only(self) -> None:
        """Baseline: MD5 of the same bytes in the same 4 MiB chunks, in memory."""
        digest = hashlib.md5()
        for chunk in chunks(self.n, self.source):
            digest.update(chunk)

    def plain_zarr(self) -> None:
        """Baseline: Zarr writing the frames to a local folder (fsynced), or to the object store's own ``FSMap``."""
        where = self.objfs().get_mapper(f"{self.bucket}/plain/frames.zarr") if self.bucket else None  # empty: falsy
        write_frames(str(self.plain_root / "frames.zarr") if where is None else where, self.frames)
        self.sync(self.plain_root)

    def array(self) -> np.ndarray:
        """Prepared: the payload as one float64 array ``(512, n)`` in memory, Fortran-ordered (bytes as written)."""
        return np.concatenate(list(chunks(self.n, self.source))).reshape((ROWS, -1), order="F")

    def attachment(self) -> str:
        """Prepared: the payload as a local file."""
        with open(self.scratch / "payload.bin", "wb") as f:
            f.writelines(chunks(self.n, self.source))
        return f.name

    def stacked_frames(self) -> np.ndarray:
        """Prepared: the Zarr rows' frames stacked in memory."""
        return np.stack(list(frames(self.frames)))

    def dj_staged_object(self) -> None:
        """DataJoint 2.3.5's own ``Table.staged_insert1`` (``dj_staged.enable()`` never runs), an ``<object@>`` file."""
        with self.table().staged_insert1 as staged:
            staged.rec["bench_id"] = 1
            with staged.open("raw", ".bin") as f:
                f.writelines(chunks(self.n, self.source))

    def into(self, field: str, sized: bool = False, filename: str | None = None, key: int = 1) -> None:
        """Ours: the payload into ``field`` by ``staged.open()`` (``size=`` if ``sized``, a filename first if given)."""
        with dj_staged.staged_insert1(self.table()) as staged:
            staged.rec["bench_id"] = key
            if filename is not None:
                staged.set_filename(field, filename)
            npy = field == "waveform"
            at = {"path": "subject01/payload.bin"} if field == "placed" else {"ext": ".npy" if npy else ".bin"}
            with staged.open(field, **at, size=self.n * CHUNK if sized else None) as f:
                if npy:
                    header = {"descr": "<f8", "fortran_order": False, "shape": (self.n * CHUNK // 8,)}
                    np.lib.format.write_array_header_2_0(f, header)
                f.writelines(chunks(self.n, self.source))

    def interrupted(self, field: str) -> None:
        """Prepared: a ``resume=True`` write of ``field`` interrupted at 90 % once its last durable unit is recorded."""
        heard: queue.Queue[int] = queue.Queue()  # the offsets recorded durable, in order
        with steps.observe("writer.checkpoint", lambda doc, **_: heard.put(doc["checkpoint"]["offset"])):
            with contextlib.suppress(KeyboardInterrupt), dj_staged.staged_insert1(self.table(), resume=True) as staged:
                staged.rec["bench_id"] = 1
                with staged.open(field, ".bin") as f:
                    f.writelines(chunks(self.n * 9 // 10, self.source))
                    while heard.get(timeout=600) < f.tell() - f.tell() % f.unit:
                        pass
                    raise KeyboardInterrupt

    def resume(self, field: str) -> dict:
        """Ours: the interrupted write of ``field`` resumed at its durable offset, written to its end."""
        with dj_staged.staged_insert1(self.table(), resume=True) as staged:
            staged.rec["bench_id"] = 1
            with staged.open(field, ".bin") as f:
                start = f.tell()
                f.writelines(chunks(self.n, self.source, start // CHUNK))
        return {"resumed_from": start, "unit_bytes": f.unit}

    def zarr_into(self, field: str) -> None:
        """Ours: the frames written by Zarr into ``field`` through ``staged.store(field, ".zarr")``."""
        with dj_staged.staged_insert1(self.table()) as staged:
            staged.rec["bench_id"] = 1
            write_frames(staged.store(field, ".zarr"), self.frames)

    def staged_blob_array(self) -> None:
        """Ours, ``<blob@>``: a float64 ``(512, n)`` array through ``open_blob_array``, slabs along the last axis."""
        with dj_staged.staged_insert1(self.table()) as staged:
            staged.rec["bench_id"] = 1
            with dj_staged.open_blob_array(staged, "payload", (ROWS, self.n * SLAB), "float64") as out:
                for chunk in chunks(self.n, self.source):
                    out.write(chunk.reshape((ROWS, SLAB), order="F"))

    def object_put(self) -> None:
        """Baseline: the object store's own ``put_file`` (s3fs, gcsfs, adlfs) of the prepared local file."""
        self.objfs().put_file(self.value, f"{self.bucket}/plain/payload.bin")

    def segments(self) -> list[dict]:
        """Prepared: ``batch_rows`` rows of a 1 KiB array, for DataJoint's inserts."""
        return [{"bench_id": i, "waveform": SEGMENT} for i in range(self.batch_rows)]

    def dj_insert(self, loop: bool = False, durable: bool = False, checked: bool = False) -> None:
        """DataJoint's ``insert`` of the prepared rows, or (``loop``) each alone, fsynced as a block if ``durable``,
        its key looked up first if ``checked`` (a refusal before any byte is written, as a block's)."""
        table = self.table()
        folder = self.store_root / "_schema" / table.database / table.table_name
        check = f"SELECT EXISTS (SELECT 1 FROM {table.full_table_name} WHERE bench_id = %s)"
        for rows in ([row] for row in self.value) if loop else [self.value]:
            key = rows[0]["bench_id"]
            if checked and table.connection.query(check, args=(key,)).fetchone()[0]:
                raise dj.errors.DuplicateError(f"bench_id={key} is in {table.full_table_name}")
            table.insert(rows)
            if durable:
                self.sync(folder / f"bench_id={key}", up_to=folder if key else self.store_root)

    def staged_blocks(self, batch: Any = None) -> None:
        """Ours: ``batch_rows`` small rows (a 1 KiB ``.npy`` each) as ``staged_insert1`` blocks, or as ``batch``'s."""
        for i in range(self.batch_rows):
            with batch.row() if batch is not None else dj_staged.staged_insert1(self.table()) as staged:
                staged.rec["bench_id"] = i
                with staged.open("waveform", ".npy") as f:
                    np.save(f, SEGMENT, allow_pickle=False)

    def staged_batch(self) -> None:
        """Ours: the same rows as one ``staged_insert`` batch."""
        with dj_staged.staged_insert(self.table()) as batch:
            self.staged_blocks(batch)

    def fork_writers(self, n: int) -> list[Any]:
        """Prepared: ``n`` forked processes, each with its own bytes and database session, ready to stage."""
        fork, schema = multiprocessing.get_context("fork"), self.schema.database
        start, self.inherited = fork.Barrier(n + 1), (self.schema, self._table)  # a child never uses or closes it

        def write(key: int) -> None:
            self._table, self.n = None, self.n // n
            self.source = np.random.default_rng().standard_normal(self.source.shape)
            self.table(schema=schema)
            start.wait()  # ready
            start.wait()  # go
            self.into("content", key=key)

        writers = [fork.Process(target=write, args=(key,)) for key in range(1, n + 1)]
        for writer in writers:
            writer.start()
        start.wait(timeout=600)
        return [start, *writers]

    def run_writers(self) -> None:
        """Let the prepared writers stage ``<hash@>`` rows at once; wait for them."""
        start, *writers = self.value
        start.wait(timeout=600)
        for writer in writers:
            writer.join()
        if failed := [writer.exitcode for writer in writers if writer.exitcode]:
            raise RuntimeError(f"writers failed with exit codes {failed}")

    def gc_store(self) -> None:
        """Prepared: 1,000 small ``<npy@>`` rows in one batch, then half of them deleted (objects orphaned)."""
        self.batch_rows = GC_OBJECTS
        self.staged_batch()
        (self.table() & f"bench_id < {GC_OBJECTS // 2}").delete_quick()

    def gc_collect(self) -> dict:
        """One dry-run ``dj_staged.gc.collect`` with no grace period."""
        report = dj_staged.gc.collect(self.schema, store=self.store, grace=0, dry_run=True)
        return {"objects": GC_OBJECTS, "collectable": report.count}
