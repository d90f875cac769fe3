"""Every object path a row references, read strictly.

DataJoint's collector logs and skips a table it cannot read, which would turn
that table's live objects into orphans. Here any failure raises: a collection
that cannot see every reference deletes nothing, and neither does one that
meets a column whose codec is not registered in this process (DataJoint's
collector does not scan such a column, so it would take its objects for orphans).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from datajoint.errors import DataJointError
from datajoint.heading import _MissingType


def referenced_paths(schemas: Iterable[Any]) -> set[str]:
    """Paths referenced by any row of ``schemas``, in any store (a superset is the safe direction)."""
    referenced: set[str] = set()
    for schema in schemas:
        for table_name in schema.list_tables():
            try:
                table = schema.get_table(table_name)
                heading = table.heading
                missing = [n for n, a in heading.attributes.items() if isinstance(a.codec, _MissingType)]
                if missing:
                    raise DataJointError(f"codec of {missing} is not registered, so its stored paths are unknown")
                for name in [*heading.hash_objects, *heading.schema_objects]:
                    codec = heading.attributes[name].codec
                    for row in table.proj(name).cursor(as_dict=True):
                        referenced.update(path for path, _store in codec.referenced_paths(row[name]))
            except Exception as error:
                raise DataJointError(
                    f"Refusing to collect: the references of {schema.database}.{table_name} could not be read "
                    f"({type(error).__name__}: {error}); nothing was deleted"
                ) from error
    return referenced
