"""Staged insert for DataJoint's built-in ``<object@>``: files and directories.

Example::

    with staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 42
        z = zarr.open(staged.store("raw", ".zarr"), mode="w", shape=(1000, 512), chunks=(10, 512))
        z[:] = acquire()

The column value is ``ObjectCodec.encode``'s shape
``{path, store, size, ext, is_dir, item_count, timestamp}``.
"""

from __future__ import annotations

from ..addressing.schema import SchemaAddressedStaging


class ObjectStaging(SchemaAddressedStaging):
    """Adapter speaking the protocol for ``datajoint.builtin_codecs.object.ObjectCodec``."""

    staged_modes = ("store", "open")
