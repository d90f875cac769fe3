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

import contextlib
import functools
import io
import math
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from ..addressing.handles import StagedFile
from ..addressing.schema import SchemaAddressedStaging, schema_state
from ..errors import ContentError
from ..protocol import StagedField


def read_npy_header(handle: IO[bytes], field: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
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


def header_bytes(head: bytes) -> bytes | None:
    """The ``.npy`` header at the start of ``head`` (magic to padding), or None if ``head`` does not hold one."""
    if head[:6] != npy_format.MAGIC_PREFIX or len(head) < 12:
        return None
    size_bytes = 2 if head[6] == 1 else 4
    end = 8 + size_bytes + int.from_bytes(head[8 : 8 + size_bytes], "little")
    return bytes(head[:end]) if len(head) >= end else None


@functools.lru_cache(maxsize=64)
def parsed_header(header: bytes) -> tuple[tuple[int, ...], np.dtype, int, str]:
    """Shape, dtype, data offset and dtype name of a ``.npy`` header, parsed once per distinct header.

    A batch of rows of one shape and dtype writes the same header each time;
    parsing it (``ast.literal_eval``) and naming the dtype would otherwise be
    a noticeable share of a small row.
    """
    shape, _fortran, dtype, offset = read_npy_header(io.BytesIO(header), "")
    return shape, dtype, offset, str(dtype)


class NpyStaging(SchemaAddressedStaging):
    """Adapter speaking the protocol for ``datajoint.builtin_codecs.npy.NpyCodec``."""

    staged_modes = ("open",)

    def _header(self, base: dict[str, Any], field: StagedField) -> tuple[tuple[int, ...], np.dtype, int, str]:
        """Shape, dtype, data offset and dtype name of the written ``.npy``: from the bytes kept while writing,
        else read back."""
        head = schema_state(field).head()
        if head is not None:
            header = header_bytes(head)
            if header is not None:
                with contextlib.suppress(ContentError):  # an invalid header is reported below, naming the field
                    return parsed_header(header)
            try:
                shape, _fortran, dtype, offset = read_npy_header(io.BytesIO(head), field.name)
                return shape, dtype, offset, str(dtype)
            except ContentError:
                if len(head) < StagedFile.HEAD:
                    raise  # the whole file was in the head: it does not hold a .npy header
        with field.store.open_read(base["path"]) as handle:  # a long header, or a file written out of order
            shape, _fortran, dtype, offset = read_npy_header(handle, field.name)
        return shape, dtype, offset, str(dtype)

    def _enrich_staged_metadata(self, base: dict[str, Any], field: StagedField) -> dict[str, Any]:
        shape, dtype, offset, dtype_name = self._header(base, field)
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
        return {"path": base["path"], "store": base["store"], "dtype": dtype_name, "shape": list(shape)}
