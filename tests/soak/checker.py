"""The checker: every row fetched and compared with what its key determines, and what no row references."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from soak.config import PLACED, RESUMABLE_CODECS
from soak.content import expected, field_names, placed_path, tag_of


def same_array(found: Any, wanted: np.ndarray) -> bool:
    found = np.asarray(found)
    return found.dtype == wanted.dtype and found.shape == wanted.shape and bool(np.array_equal(found, wanted))


def check_field(table: Any, key: int, name: str, big_every: int, downloads: Path, raw: Any = None) -> str | None:
    """Fetch field ``name`` of row ``key`` (``raw``: the column as the database holds it); None if it holds exactly
    what it must, else why not."""
    import datajoint as dj
    import zarr

    codec = name.split("_", 1)[0]
    wanted = expected(name, key, big_every)
    with dj.config.override(download_path=str(downloads)):
        value = (table & {"k": key}).fetch1(name)
    if codec in RESUMABLE_CODECS:
        return check_resumable(table.database, name, value, wanted, raw)
    if codec in ("obj", "fp"):
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


def check_resumable(schema: str, name: str, value: Any, wanted: Any, raw: Any) -> str | None:
    """A resumable field: its content, and its metadata as one uninterrupted write would have stored it (the
    object's size and shape; a hash-addressed value's hash of the bytes stored, their size, its schema)."""
    import datajoint as dj
    import zarr
    from datajoint.hash_registry import compute_hash

    from dj_staged.stores import resolve_store

    codec, store = name.split("_", 1)
    if codec == "robj":
        ok = not value.is_dir and value.read() == wanted
        meta = {"size": len(wanted), "ext": ".bin", "is_dir": False, "item_count": None}
    elif codec == "rdir":
        files = {path: value.fsmap[path] for path in value.fsmap}
        ok = value.is_dir and same_array(zarr.open_array(value.fsmap, mode="r")[:], wanted)
        meta = {"size": sum(len(data) for data in files.values()), "ext": ".zarr", "is_dir": True}
        meta["item_count"] = len(files)
    else:
        with resolve_store(store, dj.config).open_read(raw["path"]) as handle:
            stored = handle.read()
        ok = same_array(value, wanted) if codec == "rblob" else value == wanted == stored
        ok = ok and raw["hash"] in raw["path"]
        meta = {"hash": compute_hash(stored), "size": len(stored), "schema": schema}
    meta["store"] = store
    differs = {key: raw.get(key) for key, want in meta.items() if raw.get(key) != want}
    if not ok:
        return "content differs from what its key determines"
    return f"metadata differs: {differs}" if differs else None


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
            problem = check_field(table, k, name, big_every, downloads / f"{table_name}-{k}-{name}", raw)
        except Exception as error:
            problem = f"fetch failed: {type(error).__name__}: {error}"
        if (
            not problem
            and name.startswith("fp_")
            and raw.get("path") != placed_path(table.database, table_name, name, k)
        ):
            problem = "not at the path its writer chose"
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


def leftovers(schema: Any, stores: dict[str, Any], deleted: Iterable[str] = ()) -> list[str]:
    """What no row references: files in the schema's sections, staging, leases, incomplete uploads, anything else.

    A ``<filepath@>`` value stays at its path when its row is deleted (DataJoint does not manage its life): one
    whose row ``deleted`` names (``table/key``) is no leftover if it holds what its key determines.
    """
    from dj_staged._datajoint import is_covered
    from dj_staged.references import referenced_paths, referencing_anywhere

    name = schema.database
    referenced = referenced_paths([schema])
    placed = f"{PLACED}/{name}/"
    files = {store: stored_files(store, spec) for store, spec in stores.items() if store != "default"}
    kept = referencing_anywhere(
        schema.connection, {value_root(p) for paths in files.values() for p in paths if p.startswith(placed)}
    )
    deleted_rows = set(deleted)
    found = []
    for store, paths in files.items():
        for path in paths:
            if path.startswith((f"_schema/{name}/", f"_hash/{name}/")):
                if not is_covered(path, referenced):
                    found.append(f"{store}: {path} (no row references it)")
            elif path.startswith(placed):
                if value_root(path) not in kept and not deleted_value(store, path, deleted_rows):
                    found.append(f"{store}: {path} (placed, and no row references it)")
            elif path.startswith((f"_staging/{name}/", f"_staging/_leases/{name}/")):
                found.append(f"{store}: {path} (staging or lease left)")
            else:
                found.append(f"{store}: {path} (outside the schema's sections)")
        found += [f"{store}: incomplete upload {name}" for name in incomplete_uploads(store)]
    return found


def value_root(path: str) -> str:
    """The placed value a file of ``acq/{schema}/{table}/{field}/k{key}[.d/...]`` belongs to."""
    return "/".join(path.split("/")[:5])


def deleted_value(store: str, path: str, deleted: set[str]) -> bool:
    """Whether ``path`` (a file of a placed value) belongs to a deleted row and holds what that row's key determines."""
    import datajoint as dj

    from dj_staged.stores import resolve_store

    _acq, _schema, table, name, leaf, *inside = path.split("/")
    key = int(leaf[1:].split(".")[0])
    if f"{table}/{key}" not in deleted:
        return False
    kind, content = expected(name, key, 0)
    with resolve_store(store, dj.config).open_read(path) as handle:
        data = handle.read()
    return data == content if kind == "file" else data == content.get("/".join(inside))


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
