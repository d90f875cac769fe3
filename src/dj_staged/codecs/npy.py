"""Staged insert for DataJoint's built-in ``<npy@>``: one ``.npy`` file, written with ``np.save``.

Example::

    with staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 42
        with staged.open("waveform", ".npy") as f:
            np.save(f, big_array, allow_pickle=False)

Finalization reads only the ``.npy`` header (``numpy.lib.format``), never the
array, checks that the file holds exactly the data the header announces, and
returns ``NpyCodec.encode``'s shape ``{path, store, dtype, shape}``.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from ..addressing.handles import StagedFile
from ..addressing.schema import SchemaAddressedStaging, schema_state
from ..errors import ContentError
from ..protocol import StagedField


def read_npy_header(handle: Any, field: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data_offset)`` from an open ``.npy`` file, or a clear error."""
    try:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, SyntaxError) as error:  # not OSError: a store failure must surface as itself
        raise ContentError(
            f"Field '{field}' (<npy@>) does not hold a valid .npy file ({error}); write it with "
            "np.save(f, array, allow_pickle=False)",
            field=field,
        ) from error
    return tuple(shape), fortran_order, dtype, handle.tell()


class NpyStaging(SchemaAddressedStaging):
    """Adapter speaking the protocol for ``datajoint.builtin_codecs.npy.NpyCodec``."""

    staged_modes = ("open",)

    def _header(self, base: dict, field: StagedField) -> tuple[tuple[int, ...], np.dtype, int]:
        """Shape, dtype and data offset of the written ``.npy``: from the bytes kept while writing, else read back."""
        head = schema_state(field).head()
        if head is not None:
            try:
                shape, _fortran, dtype, offset = read_npy_header(io.BytesIO(head), field.name)
                return shape, dtype, offset
            except ContentError:
                if len(head) < StagedFile.HEAD:
                    raise  # the whole file was in the head: it does not hold a .npy header
        with field.backend.open(base["path"], "rb") as handle:  # a long header, or a file written out of order
            shape, _fortran, dtype, offset = read_npy_header(handle, field.name)
        return shape, dtype, offset

    def _enrich_staged_metadata(self, base: dict, field: StagedField) -> dict:
        shape, dtype, offset = self._header(base, field)
        if dtype.hasobject:
            raise ContentError(
                f"{field.label} holds an object-dtype array; <npy> does not store those", field=field.name
            )
        expected = offset + math.prod(shape) * dtype.itemsize
        if base["size"] != expected:
            raise ContentError(
                f"{field.label} is truncated or has trailing data: the header announces "
                f"{shape} {dtype} ({expected} bytes in all), the file has {base['size']} bytes",
                field=field.name,
            )
        return {"path": base["path"], "store": base["store"], "dtype": str(dtype), "shape": list(shape)}
