"""What every benchmark row shares: the payload, the folders, the database connection, durability.

Every row writes the same bytes in the same chunks: ``CHUNK``-byte pieces cycled
from a small pool of standard-normal float64 values (incompressible, like real
recordings), so producing the data costs nothing and the rows differ only in
how the bytes reach the disk. Zarr rows write the frames of
:mod:`bench.zarr_memory` (one 2 MiB uint16 chunk per frame).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dj_staged.testing.services import PostgresInfo, connect_datajoint, local_stores

MIB = 1 << 20
GIB = 1 << 30
CHUNK = 4 * MIB  # one write call
POOL = 4  # distinct chunks, cycled
ROWS = 512  # leading dimension of the float64 array: a (512, 1024) slab is one chunk
SLAB = CHUNK // (8 * ROWS)

PG_ENV = (
    "DJ_STAGED_BENCH_PG_HOST",
    "DJ_STAGED_BENCH_PG_PORT",
    "DJ_STAGED_BENCH_PG_USER",
    "DJ_STAGED_BENCH_PG_PASSWORD",
)

Work = Callable[[], None]


def postgres_to_env(pg: PostgresInfo) -> None:
    """Hand the run's PostgreSQL to the processes started after this (read back by :func:`postgres_from_env`)."""
    os.environ.update(zip(PG_ENV, (pg.host, str(pg.port), pg.user, pg.password), strict=True))


def postgres_from_env() -> PostgresInfo:
    """The run's shared PostgreSQL, as ``bench.run`` passes it to each child."""
    host, port, user, password = (os.environ[name] for name in PG_ENV)
    return PostgresInfo(host=host, port=int(port), user=user, password=password)


def chunk_count(nbytes: int) -> int:
    """Chunks in a payload of about ``nbytes`` (at least one)."""
    return max(1, nbytes // CHUNK)


def pool() -> np.ndarray:
    """``POOL`` chunks of float64 values, ``(POOL, CHUNK // 8)``, C-contiguous."""
    return np.random.default_rng(0).standard_normal((POOL, CHUNK // 8))


def chunks(n: int, source: np.ndarray) -> Iterator[np.ndarray]:
    """``n`` chunks cycled from ``source`` without copying."""
    for i in range(n):
        yield source[i % len(source)]


def slabs(n: int, source: np.ndarray) -> Iterator[np.ndarray]:
    """The same chunks as Fortran-ordered ``(ROWS, SLAB)`` float64 slabs: their column-major bytes are the chunk."""
    for chunk in chunks(n, source):
        yield chunk.reshape((ROWS, SLAB), order="F")


def write_chunks(f: Any, n: int, source: np.ndarray) -> None:
    """Write ``n`` pool chunks to the binary file ``f``."""
    for chunk in chunks(n, source):
        f.write(chunk)


def in_memory_array(n: int, source: np.ndarray) -> np.ndarray:
    """The whole payload as one float64 array of ``n * CHUNK`` bytes (for ``insert1`` rows)."""
    array = np.empty((n, CHUNK // 8))
    for i in range(n):
        array[i] = source[i % len(source)]
    return array.reshape(-1)


def durable(root: Path) -> None:
    """fsync every file and directory under ``root``: the same end for every row."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            _fsync(os.path.join(folder, name), os.O_RDONLY)
        _fsync(folder, os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Context:
    """One row's payload size and folders; the database and table on first use."""

    nbytes: int
    folder: Path
    source: np.ndarray = field(default_factory=pool)
    _schema: Any = None
    _table: Any = None

    @property
    def n(self) -> int:
        """Chunks in the payload."""
        return chunk_count(self.nbytes)

    @property
    def store_root(self) -> Path:
        """The DataJoint store ``main`` (protocol ``file``)."""
        return self.folder / "store"

    @property
    def plain_root(self) -> Path:
        """Where the baselines write, on the same disk as the store."""
        return self.folder / "plain"

    @property
    def scratch(self) -> Path:
        """Inputs prepared before the block (an attachment's source file, a warm-up write)."""
        return self.folder / "scratch"

    def table(self) -> Any:
        """The benchmark table, declared in a fresh schema on the shared PostgreSQL."""
        if self._table is None:
            self._table = _declare(self)
        return self._table

    def make_folders(self) -> None:
        """Create the store's and the baselines' folders."""
        for path in (self.store_root, self.plain_root):
            path.mkdir(parents=True, exist_ok=True)

    def drop(self) -> None:
        """Drop the row's schema, if one was declared."""
        if self._schema is not None:
            self._schema.drop(prompt=False)

    def remove(self) -> None:
        """Drop the row's schema and delete everything it wrote."""
        try:
            self.drop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _declare(ctx: Context) -> Any:
    import datajoint as dj

    connection = connect_datajoint(postgres_from_env(), local_stores(ctx.store_root))
    ctx._schema = dj.Schema(f"bench_{uuid.uuid4().hex[:10]}", connection=connection)

    @ctx._schema
    class Bench(dj.Manual):
        definition = """
        bench_id : int32
        ---
        raw = null : <object@main>
        waveform = null : <npy@main>
        payload = null : <blob@main>
        report = null : <attach@main>
        content = null : <hash@main>
        frames = null : <zarr@main>
        """

    return Bench
