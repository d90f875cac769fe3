"""``<zarr@>``: n-dimensional arrays stored as a Zarr array at a schema-addressed ``.zarr`` path.

Example::

    @schema
    class ImagingSession(dj.Manual):
        definition = '''
        subject_id : int32
        session_id : int32
        ---
        n_frames : int32
        frames : <zarr@main>
        '''

    # An array that fits in memory: ordinary insert (numpy or zarr array).
    ImagingSession.insert1({"subject_id": 1, "session_id": 1, "n_frames": 10, "frames": frames})

    # An array that does not: staged insert, written chunk by chunk.
    with dj_staged.staged_insert1(ImagingSession) as staged:
        staged.rec["subject_id"] = 1
        staged.rec["session_id"] = 2
        z = dj_staged.create_zarr_array(staged, "frames", shape=(1000, 512, 512), chunks=(1, 512, 512), dtype="uint16")
        for i in range(1000):
            z[i] = acquire_frame()
        staged.rec["n_frames"] = 1000

    z = (ImagingSession & key).fetch1("frames")  # read-only zarr.Array; z[i] reads one chunk

Column value: ``{path, store, shape, dtype, provenance}``. Finalization reads
the array's metadata document, never a chunk.

Three participants share :class:`ZarrArrayStaging`, the lifecycle of "one Zarr
array at a ``.zarr`` path", and differ only in the column value they build,
each the one its codec's ``encode`` returns:

- :class:`ZarrCodec`, dj-staged's own ``<zarr@>``: ``dtype`` is the array's as
  stored, byte order included, read back from the Zarr metadata on both paths;
  ``provenance`` names DataJoint and dj-staged.
- :class:`DjZarrCodecsStaging`, the adapter for dj-zarr-codecs'
  ``ZarrArrayCodec``: that codec's ``encode`` records ``str(value.dtype)`` of
  the array it was given and ``provenance`` ``{"datajoint-python",
  "dj-zarr-codecs"}`` with the installed versions; so does the adapter. The
  dtype the writer declared through :func:`create_zarr_array` is recorded as
  ``encode`` records its input's; otherwise the dtype as stored, byte order
  included, which is the input's wherever Zarr keeps it (format 2's ``.zarray``,
  format 3's ``bytes`` codec ``endian``). Where Zarr does not keep it, the
  input's dtype cannot be known from what was written: zarr-python stores a
  big-endian ``>f8`` array little-endian by default (``float64``, ``endian:
  little``), and an aligned or padded structured dtype packed.
- A codec of your own whose ``encode`` applies a transform (compressors,
  filters, attributes): inherit :class:`ZarrArrayStaging`, return the transform
  from :meth:`ZarrArrayStaging.zarr_array_options`, and the staged writer gets
  it through :func:`create_zarr_array`; finalization refuses an array written
  without it.

Registration: DataJoint loads :class:`ZarrCodec` under ``zarr`` through the
``datajoint.codecs`` entry point (:mod:`dj_staged.plugin_codecs`), unless another
package provides ``zarr``: then that codec keeps the name.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable
from importlib import import_module
from typing import TYPE_CHECKING, Any, Literal, Protocol

import datajoint as dj
import numpy as np
import numpy.typing as npt
import zarr
from datajoint.builtin_codecs.schema import SchemaCodec
from datajoint.errors import DataJointError
from zarr.codecs import BytesCodec, ShardingCodec
from zarr.errors import BaseZarrError

from ..addressing.schema import SchemaAddressedStaging
from ..errors import ContentError, HandleModeError, ResumeRestartedWarning, codec_label, warn
from ..protocol import StagedField, participant_for
from ..stores import resolve_store
from ..stores.sealed import ResumableMap

if TYPE_CHECKING:
    import fsspec

    from .._datajoint import Codec, Table, Value
    from ..addressing.handles import StagedFile

logger = logging.getLogger(__name__)

ZARR_EXT = ".zarr"


_METADATA_ERRORS = (BaseZarrError, ValueError, KeyError, TypeError, json.JSONDecodeError)


def open_written_array(fsmap: fsspec.FSMap, label: str, field: str | None = None) -> zarr.Array[Any]:
    """The Zarr array at ``fsmap``, opened read-only from its metadata document (no chunk is read)."""
    try:
        return zarr.open_array(fsmap, mode="r")
    except _METADATA_ERRORS as error:
        raise ContentError(
            f"{label} does not hold a Zarr array ({type(error).__name__}: {error}); "
            "write one with zarr.open(staged.store(field, '.zarr'), mode='w', shape=..., dtype=...)",
            field=field,
        ) from error


def _bytes_endian(codecs: Iterable[object]) -> str | None:
    """The ``endian`` of the ``bytes`` codec in a format 3 codec pipeline (inside a shard, if sharded)."""
    for codec in codecs:
        if isinstance(codec, ShardingCodec):
            return _bytes_endian(codec.codecs)
        if isinstance(codec, BytesCodec):
            return codec.endian.value if codec.endian is not None else None
    return None


def stored_dtype(array: zarr.Array[Any]) -> np.dtype:
    """The numpy dtype of ``array`` as stored, byte order included.

    Format 2 keeps the byte order in ``.zarray``'s dtype (``>f8``). Format 3
    names the type without one (``float64``) and keeps the byte order in the
    ``bytes`` codec's ``endian``, which ``zarr.open_array(...).dtype`` does not
    reflect.
    """
    dtype = np.dtype(array.dtype)
    if array.metadata.zarr_format == 2 or dtype.byteorder == "|":
        return dtype
    endian = _bytes_endian(array.metadata.codecs)
    return dtype if endian is None else dtype.newbyteorder("<" if endian == "little" else ">")


def read_array_metadata(fsmap: fsspec.FSMap, label: str) -> tuple[list[int], str]:
    """``(shape, dtype)`` of the Zarr array at ``fsmap`` as stored, from its metadata document only."""
    array = open_written_array(fsmap, label)
    return list(array.shape), str(stored_dtype(array))


class ZarrArrayStaging(SchemaAddressedStaging):
    """Lifecycle of a codec that stores one Zarr array at a schema-addressed ``.zarr`` path.

    A mixin for such a codec, or the base of an adapter for another package's.
    Subclasses build the column value in :meth:`_column_value`; a codec whose
    ``encode`` writes with particular settings returns them from
    :meth:`zarr_array_options`.
    """

    staged_modes = ("store",)

    def zarr_array_options(self) -> dict[str, Any]:
        """Keyword arguments ``encode`` gives ``zarr.create_array`` besides the data: the codec's transform.

        For example ``{"compressors": ..., "filters": ..., "attributes": {...}}``.
        Empty (the default) means the codec imposes nothing, and an array
        written with any settings is accepted.
        """
        return {}

    def check_staged_array(
        self, codec: Codec, label: str, field: str, *, shape: tuple[int, ...], dtype: npt.DTypeLike
    ) -> np.dtype:
        """Refuse, with a ``ContentError``, an array of ``shape`` and ``dtype`` that ``insert1`` would refuse.

        Called before anything is written. ``insert1`` refuses what the codec's
        ``validate`` refuses (given an array of that dtype and shape, made
        without memory) and what ``zarr.create_array`` refuses with the codec's
        settings (``float128``, sub-array fields, object fields); an array Zarr
        writes but cannot read back (``datetime64`` without a unit) is refused
        too, as its row could not be fetched. Returns the numpy dtype.
        """
        try:
            declared = np.dtype(dtype)
        except TypeError as error:
            raise ContentError(f"{label}: {dtype!r} is not a numpy dtype ({error})", field=field) from error
        probe = np.broadcast_to(np.zeros((), dtype=declared), shape)  # the dtype and shape, no memory
        try:
            codec.validate(probe)
        except Exception as error:  # the codec's own refusal, as insert1 meets it
            raise ContentError(
                f"{label}: insert1 refuses a {declared} array ({type(error).__name__}: {error})", field=field
            ) from error
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what zarr warns of, it warns again when the array is created
            try:
                created = zarr.create_array(
                    store=zarr.storage.MemoryStore(), shape=shape, dtype=declared, **self.zarr_array_options()
                )
                zarr.open_array(created.store, mode="r")
            except _METADATA_ERRORS as error:
                raise ContentError(
                    f"{label}: Zarr does not store a {declared} array that it can read back, so insert1 does not "
                    f"either ({type(error).__name__}: {error})",
                    field=field,
                ) from error
        return declared

    def create_staged_array(
        self,
        field: StagedField,
        store: fsspec.FSMap,
        *,
        shape: tuple[int, ...],
        dtype: npt.DTypeLike,
        chunks: tuple[int, ...] | Literal["auto"] = "auto",
        **options: Any,
    ) -> zarr.Array[Any]:
        """Create the field's array in ``store`` as ``encode`` would for an array of ``shape`` and ``dtype``.

        Keeps the dtype declared, and the dtype of the array created as stored
        (the declared one describes what was written as long as the array at
        the path is still stored so), in ``field.options`` (see :meth:`_dtype`).
        """
        settings = {**self.zarr_array_options(), **options}
        array = resumed_array(field, store, shape=shape, dtype=dtype, chunks=chunks, settings=settings)
        if array is None:  # overwrite: a resumed directory may hold an array no longer wanted (emptied, recorded)
            resumed = isinstance(store, ResumableMap)
            array = zarr.create_array(
                store=store, shape=shape, dtype=dtype, chunks=chunks, overwrite=resumed, **settings
            )
        field.options.dtype = np.dtype(dtype)
        # as finalization will read it: from the metadata document (the array object keeps the dtype it was given)
        field.options.created_dtype = str(stored_dtype(open_written_array(store, field.label, field.name)))
        return array

    def staged_handle(self, field: StagedField, *, mode: str, file_mode: str = "wb") -> fsspec.FSMap | StagedFile:
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

    def _enrich_staged_metadata(self, base: dict[str, Any], field: StagedField) -> dict[str, Any]:
        """Read the array's metadata (never its chunks) and return the column value."""
        array = open_written_array(field.backend.get_fsmap(base["path"]), field.label, field.name)
        dtype = stored_dtype(array)
        if dtype.kind == "O":  # not numpy's StringDType, which Zarr stores as `string` and insert1 accepts
            raise ContentError(f"{field.label} holds an object-dtype array, which it does not store", field=field.name)
        self._check_options(array, dtype, field)
        return self._column_value(base["path"], field.store_name, list(array.shape), self._dtype(dtype, field), field)

    def _dtype(self, stored: np.dtype, field: StagedField) -> str:
        """The column's ``dtype``: by default the array's as stored, byte order included."""
        return str(stored)

    @staticmethod
    def declared_dtype(stored: np.dtype, field: StagedField) -> np.dtype | None:
        """The dtype declared to :func:`create_zarr_array`, if the array at the path is still the one it created."""
        declared: np.dtype | None = field.options.dtype
        return declared if declared is not None and field.options.created_dtype == str(stored) else None

    def _column_value(self, path: str, store: str, shape: list[int], dtype: str, field: StagedField) -> dict[str, Any]:
        """The value ``encode`` returns for an array of this path, store, shape and dtype."""
        return {"path": path, "store": store, "shape": shape, "dtype": dtype}

    def _check_options(self, array: zarr.Array[Any], dtype: np.dtype, field: StagedField) -> None:
        """Refuse an array whose metadata differs from what ``encode`` writes with :meth:`zarr_array_options`."""
        options = self.zarr_array_options()
        if not options:
            return
        expected = zarr.create_array(
            store=zarr.storage.MemoryStore(),
            shape=array.shape,
            dtype=dtype,
            chunks=array.chunks,
            shards=array.shards,
            **options,
        ).metadata.to_dict()
        written = array.metadata.to_dict()
        differ = sorted(key for key in expected.keys() | written.keys() if expected.get(key) != written.get(key))
        if differ:
            raise ContentError(
                f"{field.label}: the array was written with other settings than insert1 writes ({', '.join(differ)} "
                f"differ); create it with dj_staged.create_zarr_array(staged, '{field.name}', shape=..., dtype=...)",
                field=field.name,
            )


def provenance() -> dict[str, str]:
    """Who wrote the array: the versions of DataJoint and dj-staged."""
    import dj_staged

    return {"datajoint": dj.__version__, "dj_staged": dj_staged.__version__}


def own_column_value(path: str, store: str, shape: list[int], dtype: str) -> dict[str, Any]:
    """dj-staged's ``<zarr@>`` column value: what ``ZarrCodec.encode`` returns and a staged row stores."""
    return {"path": path, "store": store, "shape": shape, "dtype": dtype, "provenance": provenance()}


class ZarrStaging(ZarrArrayStaging):
    """Staged insert of dj-staged's own ``<zarr@>``: the column value :meth:`ZarrCodec.encode` returns."""

    def _column_value(self, path: str, store: str, shape: list[int], dtype: str, field: StagedField) -> dict[str, Any]:
        return own_column_value(path, store, shape, dtype)


class DjZarrCodecsStaging(ZarrArrayStaging):
    """Adapter for dj-zarr-codecs' ``ZarrArrayCodec``: the column value that codec's ``encode`` returns.

    ``{path, store, shape, dtype, provenance}`` with ``dtype`` as
    ``str(numpy dtype)`` of the array written (the dtype declared through
    :func:`create_zarr_array` if it describes what was stored, else the dtype as
    stored, byte order included) and ``provenance`` ``{"datajoint-python":
    datajoint.__version__, "dj-zarr-codecs": dj_zarr_codecs.__version__}``, both
    read from the installed packages.

    ``encode`` records the dtype of the array it is given, and Zarr does not
    always store that dtype: a big-endian array written with zarr-python's
    defaults (``zarr.create_array(store, data=v)``, as ``encode`` itself
    writes) is stored little-endian (``float64``, ``endian: little``), an
    aligned structured dtype packed, and nothing in the metadata tells them
    from ``<f8`` or a packed dtype. For such arrays only
    :func:`create_zarr_array`, which is told the dtype, records what ``insert1``
    records; a plain Zarr write records the dtype as stored.
    """

    def _dtype(self, stored: np.dtype, field: StagedField) -> str:
        declared = self.declared_dtype(stored, field)
        return str(declared if declared is not None else stored)

    def _column_value(self, path: str, store: str, shape: list[int], dtype: str, field: StagedField) -> dict[str, Any]:
        package = import_module(type(field.codec).__module__.split(".", 1)[0])
        versions = {"datajoint-python": dj.__version__, "dj-zarr-codecs": package.__version__}
        return {**super()._column_value(path, store, shape, dtype, field), "provenance": versions}


class _Staged(Protocol):
    """The staged block :func:`create_zarr_array` is given (a ``StagedSession``, which this layer does not import)."""

    @property
    def table(self) -> Table: ...

    def store(self, field: str, ext: str = "") -> fsspec.FSMap: ...

    def field(self, name: str) -> StagedField: ...


def resumed_array(
    field: StagedField,
    store: fsspec.FSMap,
    *,
    shape: tuple[int, ...],
    dtype: npt.DTypeLike,
    chunks: tuple[int, ...] | Literal["auto"],
    settings: dict[str, Any],
) -> zarr.Array[Any] | None:
    """In a resumed block, the array an earlier attempt created in ``store`` with these same settings (its durable
    chunks kept: the caller skips those ``store.durable`` lists); None when there is none. One created otherwise
    (another shape, dtype, chunking or transform) is not resumed: a warning says so, and ``durable`` is emptied."""
    if not isinstance(store, ResumableMap) or not store.durable:
        return None
    wanted: dict[str, Any] = {}  # the metadata documents zarr would write now
    zarr.create_array(zarr.storage.MemoryStore(wanted), shape=shape, dtype=dtype, chunks=chunks, **settings)
    if all(key in store.durable and store[key] == value.to_bytes() for key, value in wanted.items()):
        return zarr.open_array(store, mode="r+")
    warn(
        f"{field.label}: the Zarr array an earlier attempt created differs from this one (shape, dtype, chunks or "
        "settings), so it is written from empty (its handle's durable keys are none)",
        ResumeRestartedWarning,
    )
    store.durable = frozenset()
    return None


def create_zarr_array(
    staged: _Staged,
    field: str,
    *,
    shape: tuple[int, ...],
    dtype: npt.DTypeLike,
    chunks: tuple[int, ...] | Literal["auto"] = "auto",
    **options: Any,
) -> zarr.Array[Any]:
    """Create the Zarr array of ``<zarr@>``-like field ``field`` in a staged block, as the codec's ``insert1`` would.

    The array gets the settings the codec's ``encode`` writes with (its
    compressors, filters, attributes: see
    :meth:`ZarrArrayStaging.zarr_array_options`), and the dtype is recorded as
    declared. Every dtype ``insert1`` takes is taken (structured dtypes
    included); one it refuses is a ``ContentError`` before anything is written.
    ``chunks`` (default: zarr's choice for ``shape`` and ``dtype``, as
    ``insert1`` makes it) and further ``options`` go to ``zarr.create_array``.
    Fill it as any Zarr array; the row is inserted when the block ends.
    """
    attribute = staged.table.heading.attributes.get(field)
    codec = attribute.codec if attribute is not None else None
    participant = participant_for(codec) if codec is not None and attribute.store is not None else None
    if isinstance(participant, ZarrArrayStaging):  # before anything is written: what insert1 would refuse
        dtype = participant.check_staged_array(
            codec, f"Field '{field}' ({codec_label(codec)})", field, shape=shape, dtype=dtype
        )
    store = staged.store(field, ZARR_EXT)
    staged_field = staged.field(field)
    if not isinstance(staged_field.participant, ZarrArrayStaging):
        raise HandleModeError(
            f"{staged_field.label} is not stored as one Zarr array by a Zarr codec; "
            f"write it with zarr.open(staged.store('{field}', '{ZARR_EXT}'), mode='w', ...)",
            field=field,
        )
    return staged_field.participant.create_staged_array(
        staged_field, store, shape=shape, dtype=dtype, chunks=chunks, **options
    )


# ignored: DataJoint's SchemaCodec is untyped (Any: misc) and takes the class keyword `register` (call-arg)
class ZarrCodec(ZarrStaging, SchemaCodec, register=False):  # type: ignore[call-arg,misc]
    """``<zarr@>``: numpy or zarr arrays in, read-only ``zarr.Array`` out; staged insert for larger ones."""

    name = "zarr"
    #: ``encode`` resolves ``<zarr@>`` (no store name) to ``stores.default``, so a staged insert takes it too.
    resolves_empty_store_name = True

    def validate(self, value: object) -> None:
        """Accept a numpy or zarr array of any dtype but object."""
        if not isinstance(value, np.ndarray | zarr.Array):
            raise DataJointError(f"<zarr> requires a numpy.ndarray or zarr.Array, got {type(value).__name__}")
        if value.dtype == object:
            raise DataJointError(
                "<zarr> does not store object-dtype arrays; convert to a numeric, bool, bytes or str dtype"
            )

    def encode(
        self,
        value: Value,
        *,
        key: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        store_name: str | None = None,
    ) -> dict[str, Any]:
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
            resolve_store(store, config if config is not None else dj.config).remove(path)
            raise
        shape, dtype = read_array_metadata(fsmap, f"<zarr> field '{field}'")
        return own_column_value(path, store, shape, dtype)

    def decode(
        self, stored: dict[str, Any], *, key: dict[str, Any] | None = None, context: dict[str, Any] | None = None
    ) -> zarr.Array[Any]:
        """A read-only ``zarr.Array`` on the stored array; chunks are read on indexing."""
        config = self._codec_config(key, context)
        backend = self._get_backend(stored.get("store"), config=config)
        return zarr.open_array(backend.get_fsmap(stored["path"]), mode="r")
