"""Insert a row whose staged columns already hold their final, encoded value.

``Table.insert1`` runs every codec value through the whole codec chain, so a
finalized ``<blob@>`` column value handed to it would be packed as a new blob.
Instead of changing anything shared (the table's heading, the codec registry),
the row is inserted through a private shallow copy of the table whose own
heading copy declares the staged columns as plain JSON. Everything else about
the insert (other codecs, provenance, duplicate errors, the SQL) is DataJoint's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any


def finalized_view(table: Any, fields: Iterable[str]) -> Any:
    """A copy of ``table`` that stores ``fields`` as JSON without encoding them."""
    fields = set(fields)
    heading = table.heading
    _ = heading.attributes  # loads the attributes from the database if not yet loaded
    view_heading = copy.copy(heading)
    view_heading._attributes = {
        name: attr._replace(codec=None, json=True) if name in fields else attr
        for name, attr in heading._attributes.items()
    }
    view = copy.copy(table)
    view._heading = view_heading
    return view


def insert_finalized(table: Any, row: dict[str, Any], fields: Iterable[str], **kwargs: Any) -> None:
    """``insert1(row)`` with ``fields`` inserted exactly as given."""
    finalized_view(table, fields).insert1(row, **kwargs)
