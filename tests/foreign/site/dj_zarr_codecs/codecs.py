"""The stand-in's ``<zarr@>`` codec: the behaviour of dj-zarr-codecs' ``ZarrArrayCodec`` that dj-staged relies on.

A subclass of DataJoint's ``SchemaCodec`` that registers itself under ``zarr``
when defined; its validation (``TypeError`` for anything but a NumPy or Zarr
array, ``DataJointError`` for object dtype); its ``encode``: the array goes to
``zarr.create_array(store=backend.get_fsmap(path), data=value,
write_data=True)`` at the ``.zarr`` path ``_build_path`` gives, with the store
name as given (``<zarr@>`` passes ``""`` on, which DataJoint 2.3.5 refuses),
and the column value is exactly ``{path, store, shape, dtype, provenance}``
with ``dtype`` ``str(value.dtype)`` of the array given (``'>f8'`` for a
big-endian array, which Zarr stores little-endian) and ``provenance`` naming
``datajoint-python`` and ``dj-zarr-codecs``. Like the original it predates
DataJoint 2.3.4's ``context`` argument and reads the row's context from ``key``.
"""

import datajoint
import numpy as np
import zarr
from datajoint.builtin_codecs import SchemaCodec
from datajoint.errors import DataJointError


class ZarrArrayCodec(SchemaCodec):
    """``<zarr@store>``: a NumPy or Zarr array stored as a Zarr array; fetch returns a read-only ``zarr.Array``."""

    name = "zarr"

    def validate(self, value):
        if not isinstance(value, np.ndarray | zarr.Array):
            raise TypeError(f"<zarr> requires a NumPy array or Zarr array, got {type(value).__name__}")
        if value.dtype == object:
            raise DataJointError("<zarr> does not support object dtype arrays")

    def encode(self, value, *, key=None, store_name=None):
        from dj_zarr_codecs import __version__

        schema, table, field, primary_key = self._extract_context(key)
        path, _ = self._build_path(schema, table, field, primary_key, ext=".zarr", store_name=store_name)
        backend = self._get_backend(store_name)
        zarr.create_array(store=backend.get_fsmap(path), data=value, write_data=True)
        return {
            "path": path,
            "store": store_name,
            "shape": list(value.shape),
            "dtype": str(value.dtype),
            "provenance": {"datajoint-python": datajoint.__version__, "dj-zarr-codecs": __version__},
        }

    def decode(self, stored, *, key=None):
        backend = self._get_backend(stored["store"])
        return zarr.open_array(backend.get_fsmap(stored["path"]), mode="r")
