"""Rows as the table sees them: finalized values inserted unchanged, keys compared as typed, refusals found early.

DataJoint's ``insert1`` runs every value through its codec chain, which would
re-encode a finalized column value (a ``<blob@>`` metadata dict would be packed
as a new blob). The row therefore goes through a private copy of the table
whose own heading copy declares the staged fields as plain JSON. Everything
else about the insert (other codecs, provenance, duplicate errors, the SQL) is
DataJoint's.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._datajoint import Attribute, MissingAttributeError, Table, Value, insert_statements, with_json_columns

SAVEPOINT = "dj_staged_check"


def finalized_view(table: Table, fields: Iterable[str]) -> Table:
    """A copy of ``table`` that stores ``fields`` as JSON without encoding them."""
    return with_json_columns(table, set(fields))


def insert_finalized(table: Table, rows: list[dict[str, Any]], fields: Iterable[str], **options: object) -> None:
    """``insert(rows)`` with ``fields`` inserted exactly as given."""
    finalized_view(table, fields).insert(rows, **options)


def _typed(attr: Attribute, value: Value) -> Value:
    """``value`` as the database will hold it for ``attr`` (unchanged when it cannot be converted)."""
    sql = (attr.type or "").lower()
    try:
        if attr.uuid:
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        if sql.startswith(("decimal", "numeric")):
            return decimal.Decimal(str(value))
        if "int" in sql or sql.endswith("serial"):
            if isinstance(value, float | np.floating) and not float(value).is_integer():
                return value
            return int(decimal.Decimal(str(value)))
        if sql in ("double precision", "real") or sql.startswith("float"):
            return float(value)
        if sql == "boolean":
            return bool(value) if isinstance(value, bool | int | np.bool_ | np.integer) else value
        if attr.string:
            return str(value)
        if sql == "date" and isinstance(value, str):
            return datetime.date.fromisoformat(value)
        if sql.startswith("timestamp") and isinstance(value, str):
            return datetime.datetime.fromisoformat(value)
    except (ValueError, TypeError, ArithmeticError):
        return value
    return value


KeyColumns = tuple[tuple[str, Attribute], ...]


def key_columns(table: Table) -> KeyColumns:
    """The primary key's names and attributes, in order. DataJoint rebuilds both lists at each access, which a
    small row paid several times over: a block or a batch reads them once."""
    attributes = table.heading.attributes
    return tuple((name, attributes[name]) for name in table.primary_key)


def key_token(columns: KeyColumns, key: dict[str, Any]) -> tuple[Any, ...]:
    """The primary key (``columns`` from :func:`key_columns`) as the table types it, so ``1`` and ``'1'`` of an
    ``int32`` are the same key."""
    return tuple(_typed(attribute, key[name]) for name, attribute in columns)


_PYTHON_TYPES = (int, float, str, bool, decimal.Decimal, uuid.UUID, datetime.date, datetime.datetime)


def key_probe(
    table: Table, key: dict[str, Any], columns: KeyColumns | None = None
) -> tuple[str, tuple[Any, ...]] | None:
    """SQL saying whether a row with this primary key is in ``table`` (one indexed lookup), and its arguments;
    None when the key's values do not convert to the column types (the insert then refuses them itself, with
    DataJoint's error).

    ``key in table`` would do, but builds a restricted query expression each
    time, which is most of the cost of a small row in a batch; and this one
    can share a round trip with the lease lock.
    """
    columns = columns if columns is not None else key_columns(table)
    values = key_token(columns, key)
    if not all(isinstance(value, _PYTHON_TYPES) for value in values):
        return None
    quote = table.connection.adapter.quote_identifier
    where = " AND ".join(f"{quote(name)} = %s" for name, _attribute in columns)
    return f"EXISTS (SELECT 1 FROM {table.full_table_name} WHERE {where})", values


@dataclass
class Trials:
    """What the checks before an insert keep, shared by a batch's rows: the table copies (one per set of fields
    stored as placeholders) and the sets of columns DataJoint has built an ``INSERT`` for without an error."""

    views: dict[frozenset[str], Table] = field(default_factory=dict)
    built: set[tuple[frozenset[str], frozenset[str]]] = field(default_factory=set)
    key: KeyColumns | None = None  # the table's primary key, read once
    attributes: dict[str, Attribute] | None = None  # the table's heading, read once

    def key_columns(self, table: Table) -> KeyColumns:
        """:func:`key_columns` of ``table``, read at the first row."""
        if self.key is None:
            self.key = key_columns(table)
        return self.key

    def heading(self, table: Table) -> dict[str, Attribute]:
        """``table.heading.attributes``, read at the first row (DataJoint rebuilds the dict at each access)."""
        if self.attributes is None:
            self.attributes = table.heading.attributes
        return self.attributes


def _heading(table: Table, trials: Trials | None) -> dict[str, Attribute]:
    return trials.heading(table) if trials is not None else table.heading.attributes


def _trial(
    table: Table, row: dict[str, Any], fields: Iterable[str], trials: Trials | None
) -> tuple[Table, dict[str, Any]]:
    """The table copy that stores every object-store field as plain JSON, and the row with an empty JSON value in
    each staged field (so no codec writes anything)."""
    attributes = _heading(table, trials)
    stored = {name for name, attr in attributes.items() if attr.store is not None and attr.codec is not None}
    placeholders = set(fields) | stored
    trial = {**row, **{name: {} for name in placeholders if name in fields or row.get(name) is not None}}
    views = trials.views if trials is not None else {}
    key = frozenset(placeholders)
    view = views.get(key)
    if view is None:
        view = views[key] = finalized_view(table, placeholders)
    return view, trial


def check_row(
    table: Table,
    row: dict[str, Any],
    fields: Iterable[str],
    *,
    allow_direct_insert: bool,
    trials: Trials | None = None,
) -> None:
    """Raise what DataJoint's insert of ``row`` would raise, without inserting it and in one round trip.

    DataJoint builds its own ``INSERT`` for the row on a copy of the table in
    which every object-store field is plain JSON holding an empty object (so no
    codec writes anything), and the statement runs between ``BEGIN`` and
    ``ROLLBACK`` (a savepoint inside an open transaction). Unknown attributes,
    missing values, values of the wrong type, a duplicate key and a missing
    parent fail here with DataJoint's error class and wording, before anything
    is hashed at length or promoted.
    """
    view, trial = _trial(table, row, fields, trials)
    statements = insert_statements(view, [trial], allow_direct_insert=allow_direct_insert)
    connection = table.connection
    inside = connection.in_transaction
    begin, end = (f"SAVEPOINT {SAVEPOINT}", f"ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}")
    if not inside:
        begin, end = "BEGIN", "ROLLBACK"
    sql = "; ".join([begin, *(query for query, _args in statements), end])
    arguments = [argument for _query, args in statements for argument in args]
    try:
        connection.query(sql, args=arguments)
    except BaseException:
        with contextlib.suppress(Exception):  # a failed rollback (a dead connection) must not hide the trial's error
            connection.query(end)
        raise


def check_locally(
    table: Table,
    row: dict[str, Any],
    fields: Iterable[str],
    *,
    allow_direct_insert: bool,
    trials: Trials | None = None,
) -> None:
    """Raise what DataJoint's insert of ``row`` would refuse without asking the server: no round trip.

    For the first row of a batch with each set of columns (and of columns
    left None), DataJoint builds its ``INSERT`` as :func:`check_row` has it
    built, and sends nothing: an unknown attribute fails with DataJoint's
    error, as does a value DataJoint converts or encodes itself and cannot.
    A later row with the same columns is not built again (building is most
    of a small row's own cost): its names are the ones already accepted, and
    a value DataJoint cannot convert fails the batch's final ``INSERT``,
    which unwinds the whole batch, as DataJoint's ``insert(list)`` does. A
    column that is ``NOT NULL`` without a default and gets no value fails
    with DataJoint's ``MissingAttributeError``, as the server's refusal
    would. What only the server knows (a value its type refuses, a missing
    parent, a second unique index) is left to the insert itself.
    """
    view, trial = _trial(table, row, fields, trials)
    shape = (frozenset(trial), frozenset(name for name, value in trial.items() if value is None))
    if trials is None or shape not in trials.built:
        insert_statements(view, [trial], allow_direct_insert=allow_direct_insert)
        if trials is not None:
            trials.built.add(shape)
    missing = [
        name
        for name, attr in _heading(table, trials).items()
        if trial.get(name) is None and not (attr.nullable or attr.autoincrement or attr.default is not None)
    ]
    if missing:
        key = {name: row.get(name) for name in table.primary_key}
        raise MissingAttributeError(
            f"The staged row {key} of {table.full_table_name} has no value for {', '.join(missing)} "
            "(NOT NULL without a default)"
        )
