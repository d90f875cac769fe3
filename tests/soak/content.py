"""Every field's content, a function of (field, key), so a row can be checked by its key alone; the tables."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from soak.config import BIG_SIZE, CODECS, DECLARED, PLACED, RESUMABLE_CODECS, SHARED_CONTENTS, TABLES

# a resumable write's durable unit under DJ_STAGED_PART_SIZE=64KiB (soak.resumes): S3 raises it to its smallest part,
# GCS to a chunk of its resumable upload
RESUME_UNIT = 64 << 10
RESUME_UNITS = {"s3": 5 << 20, "gcs": 256 << 10}


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


def resumable_size(store: str, key: int) -> int:
    """The bytes of a resumable field's content on ``store``: two and a half durable units and a few."""
    unit = RESUME_UNITS.get(store, RESUME_UNIT)
    return 2 * unit + unit // 2 + 13 * (key % 17)


def expected_resumable(codec: str, store: str, key: int) -> Any:
    """What a resumable field holds: bytes (``robj``, ``rhash``, the same across keys of one ``k % 7``), an array
    written column by column (``rblob``), or a Zarr array's rows, one chunk each (``rdir``)."""
    if codec == "robj":
        return pseudo_bytes(f"robj/{key}", resumable_size(store, key))
    if codec == "rhash":
        shared = key % SHARED_CONTENTS
        return pseudo_bytes(f"rhash/{shared}", resumable_size(store, shared))
    size = resumable_size(store, key)
    if codec == "rblob":
        return np.frombuffer(pseudo_bytes(f"rblob/{key}", size - size % 4), "uint8").reshape(4, -1)
    row = RESUME_UNITS.get(store, RESUME_UNIT) * 2 // 5 + key % 7
    return np.frombuffer(pseudo_bytes(f"rdir/{key}", 6 * row), "uint8").reshape(6, row)


def expected(name: str, key: int, big_every: int) -> Any:
    """What field ``name`` (``{codec}_{store}``) of the row with primary key ``key`` holds."""
    codec, store = name.split("_", 1)
    if codec in RESUMABLE_CODECS:
        return expected_resumable(codec, store, key)
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
    if codec == "fp":
        if key % 2:
            return "dir", {
                "a.bin": pseudo_bytes(f"fp/{key}/a", 80 + key % 40),
                "sub/b.bin": pseudo_bytes(f"fp/{key}/b", 50),
            }
        return "file", pseudo_bytes(f"fp/{key}/file", 400 + 17 * (key % 30))
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


def placed_path(schema: str, table: str, name: str, key: int) -> str:
    """Where field ``name`` (a ``<filepath@>`` field) of row ``key`` of ``table`` places its value."""
    kind, _content = expected(name, key, 0)
    return f"{PLACED}/{schema}/{table}/{name}/k{key}" + (".bin" if kind == "file" else ".d")


def tag_of(table: str, key: int) -> str:
    """The plain column every row carries."""
    return f"{table}/{key}"


def plain_fields(stores: list[str] | tuple[str, ...]) -> list[str]:
    """The fields the writers' ordinary operations stage: one per codec and store."""
    return [f"{codec}_{store}" for store in stores for codec in CODECS]


def resumable_fields(stores: list[str] | tuple[str, ...]) -> list[str]:
    """The fields only resumable blocks stage (soak.resumes): one per resumable codec and store."""
    return [f"{codec}_{store}" for store in stores for codec in RESUMABLE_CODECS]


def field_names(stores: list[str] | tuple[str, ...]) -> list[str]:
    """Every staged field of the soak's tables."""
    return plain_fields(stores) + resumable_fields(stores)


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
