"""Which object paths the rows of a schema reference, read strictly.

DataJoint's collector logs and skips a table it cannot read, which would turn
that table's live objects into orphans. Here any failure raises: a collection
that cannot see every reference deletes nothing, and neither does one that
meets a column whose codec is not registered in this process (DataJoint's
collector does not scan such a column, so it would take its objects for orphans).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._datajoint import Connection, Schema, is_missing_codec
from .errors import StagedInsertError


def referenced_paths(schemas: Iterable[Schema]) -> set[str]:
    """Paths referenced by any row of ``schemas``, in any store (a superset is the safe direction)."""
    referenced: set[str] = set()
    for schema in schemas:
        for table_name in schema.list_tables():
            try:
                table = schema.get_table(table_name)
                heading = table.heading
                missing = [n for n, a in heading.attributes.items() if is_missing_codec(a.codec)]
                if missing:
                    raise StagedInsertError(f"codec of {missing} is not registered, so its stored paths are unknown")
                for name in [*heading.hash_objects, *heading.schema_objects]:
                    codec = heading.attributes[name].codec
                    for row in table.proj(name).cursor(as_dict=True):
                        referenced.update(path for path, _store in codec.referenced_paths(row[name]))
            except Exception as error:
                raise StagedInsertError(
                    f"Refusing to collect: the references of {schema.database}.{table_name} could not be read "
                    f"({type(error).__name__}: {error}); nothing was deleted"
                ) from error
    return referenced


_JSON_COLUMNS = (
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = %s AND data_type IN ('json', 'jsonb')"
)


def referencing(connection: Connection, schema: str, paths: Iterable[str]) -> set[str]:
    """Those of ``paths`` that a committed row of ``schema`` references as its column value's ``path``.

    Every object-store codec stores its column value as JSON with the object's
    ``path``; a hash object in ``_hash/{schema}/`` is referenced only from its
    own schema. One query per JSON column, so checking a few paths (a rolled-back
    row's promoted objects) does not read every row.
    """
    wanted = sorted(set(paths))
    if not wanted:
        return set()
    found: set[str] = set()
    quote = connection.adapter.quote_identifier
    for table, column in connection.query(_JSON_COLUMNS, args=(schema,)).fetchall():
        rows = connection.query(
            f"SELECT DISTINCT {quote(column)}->>'path' FROM {quote(schema)}.{quote(table)} "
            f"WHERE {quote(column)}->>'path' = ANY(%s)",
            args=(wanted,),
        ).fetchall()
        found.update(row[0] for row in rows)
    return found


_ALL_JSON_COLUMNS = (
    "SELECT table_schema, table_name, column_name FROM information_schema.columns "
    "WHERE data_type IN ('json', 'jsonb') AND table_schema NOT IN ('pg_catalog', 'information_schema')"
)


def referencing_anywhere(connection: Connection, paths: Iterable[str]) -> dict[str, list[str]]:
    """Those of ``paths`` that a committed row of any schema of the database references, each with the tables
    (``schema.table``) whose rows do.

    A path a writer chose (``<filepath@>``) is not confined to one schema's
    section, and ``insert1`` records it as given: a leading ``/`` is ignored on
    both sides. Every JSON column is read (one query each), so a table this
    session cannot read raises: the caller then keeps the paths.
    """
    wanted = sorted({path.lstrip("/") for path in paths})
    if not wanted:
        return {}
    found: dict[str, list[str]] = {}
    quote = connection.adapter.quote_identifier
    for schema, table, column in connection.query(_ALL_JSON_COLUMNS).fetchall():
        value = f"ltrim({quote(column)}->>'path', '/')"
        rows = connection.query(
            f"SELECT DISTINCT {value} FROM {quote(schema)}.{quote(table)} WHERE {value} = ANY(%s)",
            args=(wanted,),
        ).fetchall()
        for (path,) in rows:
            found.setdefault(path, []).append(f"{schema}.{table}")
    return found
