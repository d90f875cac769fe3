"""Staged insert for DataJoint's built-in ``<blob@>``: raw bytes, or an array too large for memory.

Raw bytes written through ``staged.open(field, ext)`` are stored as the blob
``insert1(b"".join(chunks))`` would store uncompressed (``dj0\\0``, the bytes
type code, the length, the bytes), so fetch returns exactly those bytes::

    with staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 7
        with staged.open("payload", ".bin") as f:
            for chunk in producer:
                f.write(chunk)

The header holds the length. Pass ``size=`` to ``open()`` when it is known, and
the content is hashed as it streams (one pass); without it, the header is
patched in place at exit (local store) or the content framed server-side (S3),
and the object is re-read once to hash it.

An array whose shape and dtype are known up front is streamed with
:func:`open_blob_array`, in slabs along its **last** axis (the blob format
stores arrays in column-major order, so those slabs are contiguous)::

    with staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with open_blob_array(staged, "traces", shape=(64, n_samples), dtype="float64") as out:
            for block in acquisition:          # block.shape == (64, k)
                out.write(block)

Fetch returns an array equal to what ``insert1(array)`` fetches to. DataJoint's
``insert1`` zlib-compresses a blob over 1000 bytes when that makes it smaller;
staged ``<blob@>`` never compresses (see the README for the measured trade-off),
so for compressible content the stored object differs while the fetched value
is equal; for incompressible content the column values are identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import numpy.typing as npt
from datajoint import blob

from ..addressing.hashed import HashAddressedStaging
from ..errors import ContentError
from ..protocol import FileHandle, HandleMode, HandleOptions, StagedField

if TYPE_CHECKING:
    import fsspec

_LENGTH = 8


def bytes_header(length: int) -> bytes:
    """The blob header DataJoint's ``blob.pack`` writes before ``length`` raw bytes."""
    return cast(bytes, blob.pack(b"", compress=False))[:-_LENGTH] + np.uint64(length).tobytes()


def array_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The blob header DataJoint's ``blob.pack`` writes before an array's column-major data."""
    empty: bytes = blob.pack(np.empty((0,) * len(shape), dtype=dtype), compress=False)
    split = len(empty) - _LENGTH  # the type id and complex flag follow the shape
    start = split - _LENGTH * len(shape)
    return empty[:start] + np.asarray(shape, dtype=np.uint64).tobytes() + empty[split:]


def _check_array_dtype(field: str, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf" or dtype.byteorder == ">":
        raise ContentError(
            f"Field '{field}' (<blob@>): streaming supports native-order boolean, integer and float arrays, "
            f"not {dtype}; insert other arrays with insert1",
            field=field,
        )


class BlobStaging(HashAddressedStaging):
    """Adapter speaking the protocol for ``datajoint.builtin_codecs.blob.BlobCodec`` (store mode)."""

    def _stored_prefix(self, field: StagedField, content_size: int | None) -> bytes | None:
        declared = field.options
        if declared.shape is not None:  # an array, declared by open_blob_array
            return array_header(declared.shape, cast("np.dtype[Any]", declared.dtype))  # declared with the shape
        if field.size is not None:
            return bytes_header(field.size)
        return None if content_size is None else bytes_header(content_size)

    def _prefix_length(self, field: StagedField) -> int | None:
        return len(bytes_header(0))

    def _check_content(self, field: StagedField, content_size: int) -> None:
        declared = field.options
        array = declared.shape is not None
        # an array's dtype is declared with its shape (open_blob_array)
        expected = (
            math.prod(declared.shape or ()) * cast("np.dtype[Any]", declared.dtype).itemsize if array else field.size
        )
        if expected is not None and content_size != expected:
            raise ContentError(
                f"{field.label} received {content_size} bytes but {expected} were declared; "
                "the blob would not decode, so no row is inserted",
                field=field.name,
            )


class BlobArrayWriter:
    """Writes an array into a ``<blob@>`` field slab by slab along its last axis.

    A resumed write (``staged_insert1(..., resume=True)``) starts where the earlier
    attempt's durable bytes end: ``filled`` is then the first column (along the
    last axis) not wholly durable, the one to write next, and the bytes of it that
    are durable already are not written again.
    """

    def __init__(self, handle: FileHandle, field: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._handle = handle
        self._field = field
        self.shape = shape
        self.dtype = dtype
        column = int(np.prod(shape[:-1], dtype=np.int64)) * dtype.itemsize  # the bytes of one column
        durable = handle.tell()  # 0 unless resumed
        self.filled = durable // column if column else 0
        self._drop = durable - self.filled * column  # durable bytes of the next column, not to be written again

    def write(self, slab: npt.ArrayLike) -> None:
        """Append ``slab`` (shape ``shape[:-1] + (k,)``) after the slabs written so far."""
        slab = np.asarray(slab)
        leading = self.shape[:-1]
        if slab.dtype != self.dtype or slab.shape[:-1] != leading or slab.ndim != len(self.shape):
            raise ContentError(
                f"Field '{self._field}' (<blob@>): each slab must be {self.dtype} with shape {leading + ('k',)}, "
                f"got {slab.dtype} {slab.shape}",
                field=self._field,
            )
        if self.filled + slab.shape[-1] > self.shape[-1]:
            raise ContentError(
                f"Field '{self._field}' (<blob@>): slabs exceed the declared shape {self.shape}", field=self._field
            )
        data = slab.tobytes(order="F")
        if self._drop and data:
            data, self._drop = data[self._drop :], 0
        self._handle.write(data)
        self.filled += slab.shape[-1]

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> BlobArrayWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Close once the block inside ends cleanly; after an error leave the handle to the staged block, which
        abandons it or keeps a resumable write's durable prefix (closing would complete a partial object)."""
        if exc_type is None:
            self.close()


class _Draft(Protocol):
    """What :func:`open_blob_array` asks of a staged row (a ``session.RowDraft``, which this layer does not import)."""

    def handle(
        self, field: str, ext: str, *, mode: HandleMode, options: HandleOptions | None = None
    ) -> fsspec.FSMap | FileHandle: ...


class _Staged(Protocol):
    """The staged block :func:`open_blob_array` is given (a ``StagedSession``): its row."""

    @property
    def draft(self) -> _Draft: ...


def open_blob_array(
    staged: _Staged, field: str, shape: int | Sequence[int], dtype: npt.DTypeLike, ext: str = ""
) -> BlobArrayWriter:
    """Stream an array of known ``shape`` and ``dtype`` into the ``<blob@>`` field ``field``."""
    dims = (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    _check_array_dtype(field, dtype)
    handle = staged.draft.handle(field, ext, mode="open", options=HandleOptions(shape=dims, dtype=dtype))
    return BlobArrayWriter(handle, field, dims, dtype)
