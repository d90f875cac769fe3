"""What the conformance kit looks at: stored column values, store contents, fetched values.

Everything here reads the real thing (the database row, the objects in the
store) through DataJoint's own backends; nothing is inferred from the engine.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

import datajoint as dj
import numpy as np
from datajoint.hash_registry import build_hash_path, compute_hash
from datajoint.storage import TOKEN_ALPHABET, build_object_path

from ..stores import StagedStore, resolve_store

if TYPE_CHECKING:
    from .._datajoint import Table, Value

#: The engine's own bookkeeping (leases for ``dj-staged gc``), not a codec's artifact; tests/test_gc.py covers it.
ENGINE_PREFIXES = ("_staging/_leases/",)

_EXTENSION = re.compile(r"(\.[A-Za-z0-9][A-Za-z0-9_-]*)*")


def _store(store_name: str) -> StagedStore:
    return resolve_store(store_name, dj.config)


def store_files(store_name: str) -> list[str]:
    """Every object in store ``store_name``, relative to the store's root, sorted."""
    return sorted(f for f in _store(store_name).list_files("") if not f.startswith(ENGINE_PREFIXES))


def read_object(store_name: str, path: str) -> bytes:
    """The bytes of the object at ``path`` in store ``store_name``."""
    with _store(store_name).open_read(path) as handle:
        return handle.read()


def put_object(store_name: str, path: str, data: bytes) -> None:
    """Write ``data`` at ``path`` in store ``store_name``, as software outside dj-staged would."""
    _store(store_name).create(path, data)


def object_identity(store_name: str, path: str) -> tuple[str, ...]:
    """What changes when an object is replaced, even by identical bytes (inode and mtime; an ETag or a
    generation and the modification time on object stores)."""
    info = _store(store_name).info(path)
    assert info is not None, f"no object at {path}"
    names = ("ino", "mtime", "created", "ETag", "LastModified", "etag", "last_modified", "generation", "updated")
    return tuple(str(info.get(name)) for name in names)


def column_value(table: Table, key: dict[str, Any], field: str) -> Value:
    """The column value exactly as the database holds it (no codec decoding)."""
    where = " AND ".join(f"{name} = %s" for name in key)
    query = f"SELECT {field} FROM {table.full_table_name} WHERE {where}"
    rows = table.connection.query(query, args=tuple(key.values())).fetchall()
    assert len(rows) == 1, f"expected one row for {key}, found {len(rows)}"
    return rows[0][0]


def store_spec(store_name: str) -> dict[str, Any]:
    """The store's settings with DataJoint's defaults applied (``schema_prefix``, ``hash_prefix``, ...)."""
    return cast(dict[str, Any], dj.config.get_store_spec(store_name))


def schema_path_extension(table: Table, field: str, key: dict[str, Any], path: str, store_name: str) -> str:
    """Assert ``path`` is where ``insert1`` puts ``field`` of row ``key`` (random token aside); return its extension."""
    spec = store_spec(store_name)
    template, token = build_object_path(
        schema=table.database,
        table=table.table_name,
        field=field,
        primary_key=key,
        ext=None,
        partition_pattern=spec.get("partition_pattern"),
        token_length=spec.get("token_length", 8),
        schema_prefix=spec["schema_prefix"],
    )
    head = template[: -len(token)]
    assert path.startswith(head), f"{path!r} is not at the canonical location {head}<token><ext>"
    found, ext = path[len(head) : len(head) + len(token)], path[len(head) + len(token) :]
    assert len(found) == len(token) and set(found) <= set(TOKEN_ALPHABET), f"no valid token in {path!r}"
    assert _EXTENSION.fullmatch(ext), f"{path!r} ends in {ext!r}, not an extension"
    return ext


def hash_path(table: Table, content_hash: str, store_name: str) -> str:
    """DataJoint's canonical path for ``content_hash`` in this table's schema and store."""
    spec = store_spec(store_name)
    subfolding = spec.get("subfolding")
    return cast(
        str,
        build_hash_path(
            content_hash, table.database, tuple(subfolding) if subfolding else None, hash_prefix=spec["hash_prefix"]
        ),
    )


def content_hash(data: bytes) -> str:
    """DataJoint's content hash of stored bytes."""
    return cast(str, compute_hash(data))


def assert_equivalent(ours: Value, theirs: Value, where: str = "value") -> None:
    """Assert two fetched (and normalized) values are indistinguishable: same types, dtypes, shapes, content."""
    assert type(ours) is type(theirs), f"{where}: {type(ours).__name__} != {type(theirs).__name__}"
    if isinstance(ours, np.ndarray):
        assert ours.dtype == theirs.dtype, f"{where}: dtype {ours.dtype} != {theirs.dtype}"
        assert ours.shape == theirs.shape, f"{where}: shape {ours.shape} != {theirs.shape}"
        np.testing.assert_array_equal(ours, theirs, err_msg=where)
    elif isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), f"{where}: keys {sorted(ours)} != {sorted(theirs)}"
        for name in ours:
            assert_equivalent(ours[name], theirs[name], f"{where}[{name!r}]")
    elif isinstance(ours, list | tuple):
        assert len(ours) == len(theirs), f"{where}: length {len(ours)} != {len(theirs)}"
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_equivalent(a, b, f"{where}[{index}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"
