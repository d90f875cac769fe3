"""``<zarr@>``: n-dimensional arrays stored as a Zarr array at a schema-addressed ``.zarr`` path.

Example::

    @schema
    class ImagingSession(dj.Manual):
        definition = '''
        subject_id : int32
        session_id : int32
        ---
        n_frames : int32
        frames : <zarr@>          # or <zarr@store>
        '''

    # An array that fits in memory: ordinary insert (numpy or zarr array).
    ImagingSession.insert1({"subject_id": 1, "session_id": 1, "n_frames": 10, "frames": frames})

    # An array that does not: staged insert, written chunk by chunk.
    with dj_staged.staged_insert1(ImagingSession) as staged:
        staged.rec["subject_id"] = 1
        staged.rec["session_id"] = 2
        z = zarr.open(staged.store("frames", ".zarr"), mode="w",
                      shape=(1000, 512, 512), chunks=(1, 512, 512), dtype="uint16")
        for i in range(1000):
            z[i] = acquire_frame()
        staged.rec["n_frames"] = 1000

    z = (ImagingSession & key).fetch1("frames")  # read-only zarr.Array; z[i] reads one chunk

Column value: ``{path, store, shape, dtype, provenance}``. ``shape`` and
``dtype`` are read back from the Zarr metadata after writing, on both paths, so
a staged row and an ``insert1`` row of the same array are equal but for the
path token. ``insert1`` writes Zarr format 3; arrays of format 2 written by the
caller through ``staged.store()`` are accepted.

Registration: DataJoint loads :class:`ZarrCodec` under ``zarr`` through the
``datajoint.codecs`` entry point. When another package (``dj-zarr-codecs``)
provides a codec named ``zarr``, that codec is left in place and given staged
support through a :class:`ZarrStaging` adapter instead (see :func:`install`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import datajoint as dj
import numpy as np
import zarr
from datajoint.builtin_codecs.schema import SchemaCodec
from datajoint.errors import DataJointError
from zarr.errors import BaseZarrError

from ..addressing.schema import SchemaAddressedStaging, remove_object
from ..errors import ContentError, HandleModeError
from ..protocol import StagedField

logger = logging.getLogger(__name__)

ZARR_EXT = ".zarr"

_METADATA_ERRORS = (BaseZarrError, ValueError, KeyError, TypeError, json.JSONDecodeError)


def provenance() -> dict[str, str]:
    """Who wrote the array: the versions of DataJoint and dj-staged."""
    import dj_staged

    return {"datajoint": dj.__version__, "dj_staged": dj_staged.__version__}


def column_value(path: str, store: str, shape: list[int], dtype: str) -> dict[str, Any]:
    """The ``<zarr@>`` column value, the shape dj-zarr-codecs writes."""
    return {"path": path, "store": store, "shape": shape, "dtype": dtype, "provenance": provenance()}


def read_array_metadata(fsmap: Any, label: str) -> tuple[list[int], str]:
    """``(shape, dtype)`` of the Zarr array at ``fsmap``, from its metadata document only.

    ``zarr.open_array(..., mode="r")`` reads ``zarr.json`` (format 3) or
    ``.zarray``/``.zattrs`` (format 2) and no chunk.
    """
    try:
        array = zarr.open_array(fsmap, mode="r")
    except _METADATA_ERRORS as error:
        raise ContentError(
            f"{label} does not hold a Zarr array ({type(error).__name__}: {error}); "
            "write one with zarr.open(staged.store(field, '.zarr'), mode='w', shape=..., dtype=...)"
        ) from error
    return list(array.shape), str(array.dtype)


class ZarrStaging(SchemaAddressedStaging):
    """Staged insert of a Zarr array; also the adapter given to another package's ``zarr`` codec."""

    staged_modes = ("store",)

    def staged_handle(self, field: StagedField, *, mode: str, file_mode: str = "wb") -> Any:
        """An ``fsspec.FSMap`` at the field's canonical ``.zarr`` path (``staged.store(field, ".zarr")``)."""
        if mode == "open":
            raise HandleModeError(
                f"{field.label} does not support staged.open(): a Zarr store is a directory of chunks, not one "
                f"file; use zarr.open(staged.store('{field.name}', '.zarr'), mode='w', ...)",
                field=field.name,
            )
        if field.ext != ZARR_EXT:
            raise HandleModeError(
                f"{field.label} is stored at a '.zarr' path, as insert1 writes it; "
                f"call staged.store('{field.name}', '.zarr'), not with {field.ext or 'no extension'!r}",
                field=field.name,
            )
        return super().staged_handle(field, mode=mode, file_mode=file_mode)

    def _enrich_staged_metadata(self, base: dict, field: StagedField) -> dict:
        """Read the array's metadata (never its chunks) and return the column value."""
        shape, dtype = read_array_metadata(field.backend.get_fsmap(base["path"]), field.label)
        if np.dtype(dtype).hasobject:
            raise ContentError(
                f"{field.label} holds an object-dtype array; <zarr> does not store those", field=field.name
            )
        return column_value(base["path"], field.store_name, shape, dtype)


class ZarrCodec(ZarrStaging, SchemaCodec, register=False):  # type: ignore[call-arg]  # DataJoint's class keyword
    """``<zarr@>``: numpy or zarr arrays in, read-only ``zarr.Array`` out; staged insert for larger ones."""

    name = "zarr"

    def validate(self, value: Any) -> None:
        """Accept a numpy or zarr array of any dtype but object."""
        if not isinstance(value, np.ndarray | zarr.Array):
            raise DataJointError(f"<zarr> requires a numpy.ndarray or zarr.Array, got {type(value).__name__}")
        if value.dtype == object:
            raise DataJointError(
                "<zarr> does not store object-dtype arrays; convert to a numeric, bool, bytes or str dtype"
            )

    def encode(
        self, value: Any, *, key: dict | None = None, context: dict | None = None, store_name: str | None = None
    ) -> dict:
        """Write ``value`` as a Zarr format 3 array at the canonical path; return the column value."""
        self.validate(value)
        schema, table, field, primary_key = self._extract_context(key, context)
        config = self._codec_config(key, context)
        store = store_name or (config if config is not None else dj.config).stores["default"]
        path, _ = self._build_path(schema, table, field, primary_key, ext=ZARR_EXT, store_name=store, config=config)
        backend = self._get_backend(store, config=config)
        fsmap = backend.get_fsmap(path)
        try:
            zarr.from_array(fsmap, data=value, zarr_format=3)
        except Exception:
            remove_object(backend, path)
            raise
        shape, dtype = read_array_metadata(fsmap, f"<zarr> field '{field}'")
        return column_value(path, store, shape, dtype)

    def decode(self, stored: dict, *, key: dict | None = None, context: dict | None = None) -> zarr.Array:
        """A read-only ``zarr.Array`` on the stored array; chunks are read on indexing."""
        config = self._codec_config(key, context)
        backend = self._get_backend(stored.get("store"), config=config)
        return zarr.open_array(backend.get_fsmap(stored["path"]), mode="r")
