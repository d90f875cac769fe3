"""The <zarr@> codec: ordinary insert1, staged insert chunk by chunk, whichever package owns the name `zarr`.

This module runs twice in `make test`: here, where `zarr` is dj-staged's codec, and in a child process with the
test-only stand-in of dj-zarr-codecs on the path (tests/codecs/test_foreign_codecs.py), where `zarr` is that package's
and dj-staged serves it through an adapter. Each test states what it expects of either owner.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import datajoint as dj
import numpy as np
import pytest
import zarr
from support.stores import store_files
from support.tables import declare
from zarr.codecs import BytesCodec

import dj_staged
from dj_staged.codecs.zarr import DjZarrCodecsStaging, ZarrCodec, stored_dtype
from dj_staged.errors import ContentError, HandleModeError, NothingWrittenError, StagedInsertError
from dj_staged.plugin_codecs import other_providers

FRAMES = "subject_id : int32\nsession_id : int32\n---\nn_frames = 0 : int32\nframes : <zarr@{store}>"


def column(table, key, field):
    """The raw JSON column value, as the database holds it."""
    pk = " AND ".join(f"{k} = {v}" for k, v in key.items())
    return table.connection.query(f"SELECT {field} FROM {table.full_table_name} WHERE {pk}").fetchone()[0]


def without_path(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "path"}


def same_location(staged_path: str, inserted_path: str) -> bool:
    """Same folder and field name, both ``.zarr``: equal but for the primary key and the random token."""
    a, b = staged_path.split("/"), inserted_path.split("/")
    return (
        a[:-1] == b[:-1]
        and a[-1].split("_")[0] == b[-1].split("_")[0]
        and a[-1].endswith(".zarr")
        and b[-1].endswith(".zarr")
    )


def local_dirs(store) -> list[str]:
    root = Path(store.spec["location"])
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.zarr"))


@pytest.fixture
def Imaging(djstaged_schema, djstaged_local_store):
    return declare(djstaged_schema, "ImagingSession", FRAMES.format(store="main"))


def stage_chunks(table, key: dict, array: np.ndarray, chunks: tuple[int, ...], **open_kwargs) -> None:
    """Stage ``array`` into ``frames`` one chunk along the first axis at a time."""
    with dj_staged.staged_insert1(table) as staged:
        staged.rec.update(key)
        z = zarr.open(
            staged.store("frames", ".zarr"),
            mode="w",
            shape=array.shape,
            chunks=chunks,
            dtype=array.dtype,
            **open_kwargs,
        )
        for start in range(0, array.shape[0], chunks[0]):
            z[start : start + chunks[0]] = array[start : start + chunks[0]]
        staged.rec["n_frames"] = array.shape[0]


def owner() -> str:
    """The package whose codec DataJoint resolves `zarr` to in this process: "dj_staged" or "dj_zarr_codecs"."""
    return type(dj.codecs.get_codec("zarr")).__module__.split(".", 1)[0]


def expected_provenance() -> dict:
    """The provenance the owner's own insert1 records."""
    if owner() == "dj_staged":
        return {"datajoint": dj.__version__, "dj_staged": dj_staged.__version__}
    import dj_zarr_codecs

    return {"datajoint-python": dj.__version__, "dj-zarr-codecs": dj_zarr_codecs.__version__}


def zarr_json(meta: dict) -> dict:
    """The stored array's metadata document (``zarr.json``)."""
    from datajoint.hash_registry import get_store_backend

    return json.loads(get_store_backend(meta["store"]).get_fsmap(meta["path"])["zarr.json"])


def test_zarr_name_resolves_to_one_codec_that_takes_part():
    """The codec DataJoint resolves `zarr` to is the class an entry point named `zarr` loads: theirs if any."""
    ours = [p for p in entry_points(group="datajoint.codecs", name="zarr") if p.value.startswith("dj_staged.")]
    assert [p.value for p in ours] == ["dj_staged.plugin_codecs:ZarrCodec"]
    codec = dj.codecs.get_codec("zarr")
    theirs = other_providers("zarr")
    if not theirs:
        assert owner() == "dj_staged" and type(codec) is ZarrCodec
        assert dj_staged.participant_for(codec) is codec
    else:  # another package provides `zarr`: it keeps the name, dj-staged serves it through an adapter
        assert [point.dist.name for point in theirs] == ["dj-zarr-codecs"]
        assert type(codec) is theirs[0].load()  # wherever the package defines it (dj_zarr_codecs.codecs)
        assert owner() == "dj_zarr_codecs" and not isinstance(codec, ZarrCodec)
        assert isinstance(dj_staged.participant_for(codec), DjZarrCodecsStaging)


def test_zarr_insert1_still_works(Imaging, djstaged_local_store, tmp_path):
    array = np.arange(6 * 5 * 4, dtype="int32").reshape(6, 5, 4)
    Imaging.insert1({"subject_id": 1, "session_id": 1, "frames": array})
    source = zarr.open(str(tmp_path / "source.zarr"), mode="w", shape=(7, 3), chunks=(2, 3), dtype="f4", zarr_format=2)
    source[:] = np.linspace(0, 1, 21, dtype="f4").reshape(7, 3)
    Imaging.insert1({"subject_id": 1, "session_id": 2, "frames": source})

    from_numpy = (Imaging & {"session_id": 1}).fetch1("frames")
    assert isinstance(from_numpy, zarr.Array) and from_numpy.read_only
    np.testing.assert_array_equal(from_numpy[:], array)
    with pytest.raises(ValueError, match="read-only"):
        from_numpy[0] = 0
    from_zarr = (Imaging & {"session_id": 2}).fetch1("frames")
    np.testing.assert_array_equal(from_zarr[:], source[:])
    assert from_zarr.metadata.zarr_format == 3  # insert1 writes format 3 whatever the source

    meta = column(Imaging, {"subject_id": 1, "session_id": 1}, "frames")
    assert set(meta) == {"path", "store", "shape", "dtype", "provenance"}
    assert meta["store"] == "main" and meta["shape"] == [6, 5, 4] and meta["dtype"] == "int32"
    assert meta["provenance"] == expected_provenance()
    assert meta["path"].startswith("_schema/") and "/subject_id=1/session_id=1/frames_" in meta["path"]
    assert meta["path"].endswith(".zarr")
    assert f"{meta['path']}/zarr.json" in store_files(djstaged_local_store)


@pytest.mark.parametrize("value", [[1, 2, 3], "frames", np.array([{"a": 1}, None], dtype=object)])
def test_zarr_insert1_rejects_object_dtype_and_non_arrays(Imaging, djstaged_local_store, value):
    # dj-staged's codec raises DataJointError for both; dj-zarr-codecs' raises TypeError for a non-array
    expected = dj.DataJointError if owner() == "dj_staged" or isinstance(value, np.ndarray) else TypeError
    with pytest.raises(expected, match=r"<zarr>"):
        Imaging.insert1({"subject_id": 1, "session_id": 1, "frames": value})
    assert len(Imaging()) == 0 and store_files(djstaged_local_store) == []


def sample_array(dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A deterministic array of ``dtype``: small counts, or for structured and raw dtypes a pattern of bytes."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    if dtype.names or dtype.kind == "V":  # the pattern never makes a NaN of a float field
        raw = (np.arange(count * dtype.itemsize) % 251).astype("u1").tobytes()
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return (np.arange(count) % 7).astype(dtype).reshape(shape)


#: Every kind of dtype insert1 takes: numbers in either byte order, strings, raw bytes, times, structured dtypes.
DTYPES = {
    "uint16": "uint16",
    "float32": "float32",
    ">f8": ">f8",
    ">u2": ">u2",
    "bool": "bool",
    "complex64": "complex64",
    ">c8": ">c8",
    "float16": "float16",
    "S5": "S5",
    "<U3": "<U3",
    ">U3": ">U3",
    "V8": "V8",
    "M8[s]": "M8[s]",
    ">m8[ns]": ">m8[ns]",
    "StringDType": np.dtypes.StringDType(),
    "structured": [("a", "<i4"), ("b", "<f8")],
    "structured-big": [("a", ">i4"), ("b", ">f8")],
    "structured-nested": [("a", [("x", "u1"), ("y", "<f4")]), ("b", "<i2")],
    "structured-aligned": np.dtype([("a", "u1"), ("b", "<i4")], align=True),
}


@pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")  # zarr's, for strings and records
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_staged_row_equals_insert1_row_key_by_key(Imaging, dtype):
    """Staged through create_zarr_array: the same column value and the same stored array as the owner's insert1."""
    array = sample_array(dtype, (8, 6, 3))
    Imaging.insert1({"subject_id": 1, "session_id": 1, "n_frames": 8, "frames": array})
    with dj_staged.staged_insert1(Imaging) as staged:
        staged.rec.update(subject_id=1, session_id=2, n_frames=8)
        z = dj_staged.create_zarr_array(staged, "frames", shape=array.shape, dtype=array.dtype)
        for start in range(0, 8, 2):
            z[start : start + 2] = array[start : start + 2]

    inserted = column(Imaging, {"subject_id": 1, "session_id": 1}, "frames")
    staged = column(Imaging, {"subject_id": 1, "session_id": 2}, "frames")
    assert set(staged) == set(inserted) == {"path", "store", "shape", "dtype", "provenance"}
    assert without_path(staged) == without_path(inserted)
    assert staged["provenance"] == expected_provenance() and staged["shape"] == [8, 6, 3]
    # dj-zarr-codecs records its input's dtype; dj-staged's codec the array's as stored (zarr stores little-endian,
    # structured dtypes packed)
    fetched = (Imaging & {"session_id": 2}).fetch1("frames")
    assert staged["dtype"] == str(array.dtype if owner() == "dj_zarr_codecs" else stored_dtype(fetched))
    assert zarr_json(staged) == zarr_json(inserted)
    assert same_location(staged["path"].replace("session_id=2", "session_id=1"), inserted["path"])
    np.testing.assert_array_equal(fetched[:], (Imaging & {"session_id": 1}).fetch1("frames")[:])
    # zarr-python 3.1 stores the bytes of big-endian structured fields unswapped and reads them back little-endian,
    # for insert1's row and ours alike: those rows fetch equal to each other, not to the array written
    big_endian_fields = array.dtype.names and any(array.dtype[name].byteorder == ">" for name in array.dtype.names)
    if not big_endian_fields:
        np.testing.assert_array_equal(fetched[:], array.astype(fetched.dtype))


@pytest.mark.parametrize("dtype", [">f8", ">i4", ">c16"])
def test_big_endian_array_written_with_zarrs_defaults(Imaging, dtype):
    """dj-zarr-codecs' own call on a staged handle: the stored array is insert1's; the dtype is the one exception.

    Zarr stores a big-endian array little-endian by default and keeps no trace of its byte order (`float64`,
    `bytes` codec `endian: little`), so what was written cannot tell `>f8` from `<f8`: the row records the dtype as
    stored, which dj-staged's codec's insert1 records too, and dj-zarr-codecs' (the input's, `>f8`) does not.
    """
    array = sample_array(dtype, (8, 6))
    Imaging.insert1({"subject_id": 1, "session_id": 1, "frames": array})
    with dj_staged.staged_insert1(Imaging) as staged:
        staged.rec.update(subject_id=1, session_id=2)
        zarr.create_array(store=staged.store("frames", ".zarr"), data=array, write_data=True)
    inserted = column(Imaging, {"subject_id": 1, "session_id": 1}, "frames")
    staged = column(Imaging, {"subject_id": 1, "session_id": 2}, "frames")
    assert zarr_json(staged) == zarr_json(inserted)
    assert zarr_json(staged)["codecs"][0] == {"name": "bytes", "configuration": {"endian": "little"}}
    little = str(np.dtype(dtype).newbyteorder("<"))  # float64, int32, complex128
    assert staged["dtype"] == little
    expected = without_path(staged) if owner() == "dj_staged" else {**without_path(staged), "dtype": dtype}
    assert without_path(inserted) == expected
    np.testing.assert_array_equal((Imaging & {"session_id": 2}).fetch1("frames")[:], array)


@pytest.mark.parametrize("dtype", [">f8", ">i4", ">c16"])
def test_big_endian_array_stored_big_endian_records_its_byte_order(Imaging, dtype):
    """Where Zarr keeps the byte order (the `bytes` codec's `endian`), the row records the dtype insert1 records
    for that array in dj-zarr-codecs (its input's, `>f8`), read from the metadata alone."""
    array = sample_array(dtype, (8, 6))
    with dj_staged.staged_insert1(Imaging) as staged:
        staged.rec.update(subject_id=1, session_id=1)
        store = staged.store("frames", ".zarr")
        zarr.create_array(store=store, data=array, serializer=BytesCodec(endian="big"), write_data=True)
    staged = column(Imaging, {"subject_id": 1, "session_id": 1}, "frames")
    assert staged["dtype"] == str(np.dtype(dtype)) == dtype
    assert zarr_json(staged)["codecs"][0] == {"name": "bytes", "configuration": {"endian": "big"}}
    np.testing.assert_array_equal((Imaging & {"session_id": 1}).fetch1("frames")[:], array)


REFUSED = {
    "object": object,
    "object-field": [("a", "O")],
    "float128": "float128",
    "subarray-field": [("a", "<i4", (2,))],
}


@pytest.mark.parametrize("dtype", REFUSED.values(), ids=REFUSED.keys())
def test_create_zarr_array_refuses_what_insert1_refuses_before_anything_is_written(
    Imaging, djstaged_local_store, dtype
):
    with pytest.raises(Exception) as refused:  # noqa: B017  (the class is the codec's or zarr's: DataJointError, ...)
        Imaging.insert1({"subject_id": 1, "session_id": 1, "frames": np.zeros((4, 3), dtype=dtype)})
    assert not isinstance(refused.value, ContentError)
    assert len(Imaging()) == 0 and store_files(djstaged_local_store) == []
    seen = {}
    with pytest.raises(ContentError) as raised, dj_staged.staged_insert1(Imaging) as staged:
        staged.rec.update(subject_id=1, session_id=2)
        try:
            dj_staged.create_zarr_array(staged, "frames", shape=(4, 3), dtype=dtype)
        finally:
            seen = {"fields": staged.staged_fields, "files": store_files(djstaged_local_store, leases=True)}
    assert seen == {"fields": [], "files": []}  # refused before the field was claimed: not even a lease
    assert raised.value.field == "frames" and "Field 'frames' (<zarr>)" in str(raised.value)
    assert len(Imaging()) == 0 and store_files(djstaged_local_store, leases=True) == []


def test_create_zarr_array_refuses_a_dtype_zarr_cannot_read_back(Imaging, djstaged_local_store):
    """A datetime64 without a unit: zarr writes it, and cannot open the array again; no staged row is made of it."""
    with pytest.raises(ContentError, match="can read back"), dj_staged.staged_insert1(Imaging) as staged:
        staged.rec.update(subject_id=1, session_id=1)
        dj_staged.create_zarr_array(staged, "frames", shape=(4,), dtype="M8")
    assert len(Imaging()) == 0 and store_files(djstaged_local_store, leases=True) == []


@pytest.mark.parametrize(
    ("dtype", "settings", "recorded"),
    [
        (">f8", {"zarr_format": 2}, ">f8"),  # format 2 keeps the byte order in .zarray's dtype
        (">f8", {"serializer": BytesCodec(endian="big")}, ">f8"),  # format 3 keeps it in the bytes codec
        (">f8", {}, "float64"),  # zarr-python stores format 3 little-endian unless told otherwise
        ("<i2", {"serializer": BytesCodec(endian="big")}, ">i2"),
        ("uint8", {"zarr_format": 2}, "uint8"),
        ([("a", "<i4"), ("b", "<f8")], {}, "[('a', '<i4'), ('b', '<f8')]"),  # packed: stored as given
    ],
)
def test_plain_zarr_writes_record_the_dtype_as_stored(Imaging, dtype, settings, recorded):
    array = np.arange(12).astype(dtype).reshape(4, 3)
    with dj_staged.staged_insert1(Imaging) as staged:
        staged.rec.update(subject_id=1, session_id=1)
        z = zarr.create_array(staged.store("frames", ".zarr"), shape=(4, 3), chunks=(2, 3), dtype=dtype, **settings)
        z[:] = array
    meta = column(Imaging, {"subject_id": 1, "session_id": 1}, "frames")
    assert meta["dtype"] == recorded and meta["provenance"] == expected_provenance()
    np.testing.assert_array_equal((Imaging & {"session_id": 1}).fetch1("frames")[:], array)


def test_create_zarr_array_is_for_zarr_fields_only(djstaged_schema, djstaged_local_store):
    Table = declare(djstaged_schema, "Files", "k : int32\n---\nraw : <object@main>")
    with pytest.raises(HandleModeError) as raised, dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        dj_staged.create_zarr_array(staged, "raw", shape=(3,), dtype="uint8")
    assert raised.value.field == "raw" and len(Table()) == 0 and store_files(djstaged_local_store) == []


def test_staged_zarr_chunked_write_roundtrip(Imaging, djstaged_local_store):
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 4096, size=(64, 48), dtype="uint16") for _ in range(25)]
    with dj_staged.staged_insert1(Imaging) as staged:
        staged.rec["subject_id"] = 3
        staged.rec["session_id"] = 1
        fsmap = staged.store("frames", ".zarr")
        assert fsmap.root.endswith(".zarr")
        z = zarr.open(fsmap, mode="w", shape=(25, 64, 48), chunks=(1, 64, 48), dtype="uint16")
        for i, frame in enumerate(frames):
            z[i] = frame
        staged.rec["n_frames"] = len(frames)

    fetched = (Imaging & {"subject_id": 3}).fetch1("frames")
    assert fetched.shape == (25, 64, 48) and fetched.chunks == (1, 64, 48)
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(fetched[i], frame)
    meta = column(Imaging, {"subject_id": 3, "session_id": 1}, "frames")
    chunk_files = [f for f in store_files(djstaged_local_store) if f.startswith(meta["path"] + "/c/")]
    assert len(chunk_files) == 25


def test_exception_mid_chunked_write_leaves_no_row_and_no_zarr_directory(Imaging, djstaged_local_store):
    with pytest.raises(RuntimeError, match="camera lost"), dj_staged.staged_insert1(Imaging) as staged:
        staged.rec["subject_id"] = 1
        staged.rec["session_id"] = 1
        z = zarr.open(staged.store("frames", ".zarr"), mode="w", shape=(10, 8, 8), chunks=(1, 8, 8), dtype="uint8")
        for i in range(10):
            if i == 4:
                assert len(store_files(djstaged_local_store)) == 5  # zarr.json and four chunks
                raise RuntimeError("camera lost")
            z[i] = i + 1  # not the fill value, so every chunk is written
    assert len(Imaging()) == 0
    assert store_files(djstaged_local_store) == [] and local_dirs(djstaged_local_store) == []


def test_staged_zarr_format_2_is_accepted(Imaging, djstaged_local_store):
    array = np.arange(40, dtype="<i8").reshape(10, 4)
    stage_chunks(Imaging, {"subject_id": 1, "session_id": 1}, array, chunks=(5, 4), zarr_format=2)
    meta = column(Imaging, {"subject_id": 1, "session_id": 1}, "frames")
    assert meta["shape"] == [10, 4] and meta["dtype"] == "int64"
    assert f"{meta['path']}/.zarray" in store_files(djstaged_local_store)
    fetched = (Imaging & {"session_id": 1}).fetch1("frames")
    assert fetched.metadata.zarr_format == 2
    np.testing.assert_array_equal(fetched[:], array)


def test_finalize_reads_metadata_only(Imaging, djstaged_local_store):
    with dj_staged.staged_insert1(Imaging) as staged:
        staged.rec["subject_id"] = 1
        staged.rec["session_id"] = 1
        fsmap = staged.store("frames", ".zarr")
        z = zarr.open(fsmap, mode="w", shape=(4, 16), chunks=(1, 16), dtype="float64")
        z[:] = 1.0
        for name in [k for k in fsmap if k.startswith("c/")]:
            fsmap[name] = b"not a zstd frame"  # any read of a chunk would now fail
    meta = column(Imaging, {"subject_id": 1, "session_id": 1}, "frames")
    assert meta["shape"] == [4, 16] and meta["dtype"] == "float64"
    with pytest.raises(Exception):  # noqa: B017  (zarr's decode error type is not public)
        (Imaging & {"session_id": 1}).fetch1("frames")[0]


@pytest.mark.parametrize(
    ("call", "ext", "error"),
    [
        ("open", ".zarr", HandleModeError),  # a file handle: an array is a directory
        ("store", "", HandleModeError),  # an extension other than .zarr
        ("store", ".zr", HandleModeError),
        ("store", ".zarr.zip", HandleModeError),
        ("store", ".zarr", NothingWrittenError),  # the handle taken, nothing written through it
    ],
    ids=["open", "store-no-extension", "store-.zr", "store-.zarr.zip", "store-nothing-written"],
)
def test_refused_leaving_no_row_and_nothing_in_the_store(Imaging, djstaged_local_store, call, ext, error):
    with pytest.raises(error):
        with dj_staged.staged_insert1(Imaging) as staged:
            staged.rec.update(subject_id=1, session_id=1)
            getattr(staged, call)("frames", ext)
    assert len(Imaging()) == 0 and store_files(djstaged_local_store) == []


@pytest.mark.parametrize("content", ["group", "plain file", "broken metadata"])
def test_something_other_than_a_zarr_array_is_an_error(Imaging, djstaged_local_store, content):
    with pytest.raises(ContentError):
        with dj_staged.staged_insert1(Imaging) as staged:
            staged.rec.update(subject_id=1, session_id=1)
            fsmap = staged.store("frames", ".zarr")
            if content == "group":
                zarr.open_group(fsmap, mode="w").create_array("frames", shape=(3,), dtype="uint8")
            elif content == "plain file":
                fsmap["frames.bin"] = b"\x00" * 16
            else:
                fsmap["zarr.json"] = b'{"zarr_format": 3, "node_type": "array"}'
    assert len(Imaging()) == 0 and store_files(djstaged_local_store) == [] and local_dirs(djstaged_local_store) == []


def test_no_store_name_is_taken_exactly_where_the_owners_insert1_takes_it(djstaged_schema, djstaged_local_store):
    """`<zarr@>`: dj-staged's insert1 reads it as stores.default, and so does its staged insert; dj-zarr-codecs'
    insert1 passes the empty name on, which DataJoint 2.3.5 refuses, and the staged insert refuses it too."""
    Table = declare(djstaged_schema, "DefaultStore", FRAMES.format(store=""))
    array = np.ones((3, 2), dtype="uint8")
    if owner() == "dj_staged":
        Table.insert1({"subject_id": 1, "session_id": 1, "frames": array})
        stage_chunks(Table, {"subject_id": 1, "session_id": 2}, array, chunks=(1, 2))
        staged = column(Table, {"subject_id": 1, "session_id": 2}, "frames")
        assert staged["store"] == "main"
        assert without_path(column(Table, {"subject_id": 1, "session_id": 1}, "frames")) == without_path(staged)
        return
    refused = "Storage '' is requested but not configured in stores"
    with pytest.raises(dj.DataJointError, match=refused):
        Table.insert1({"subject_id": 1, "session_id": 1, "frames": array})
    for write in (
        lambda staged: zarr.open(staged.store("frames", ".zarr"), mode="w", shape=array.shape, dtype=array.dtype),
        lambda staged: dj_staged.create_zarr_array(staged, "frames", shape=array.shape, dtype=array.dtype),
    ):
        with pytest.raises(StagedInsertError, match=refused) as raised:
            with dj_staged.staged_insert1(Table) as staged:
                staged.rec.update(subject_id=1, session_id=2)
                write(staged)
        assert raised.value.field == "frames" and str(raised.value).endswith("<zarr@main>")
    assert len(Table()) == 0 and store_files(djstaged_local_store, leases=True) == []


def test_seed_example_on_s3(djstaged_schema, djstaged_s3_store):
    ImagingSession = declare(djstaged_schema, "ImagingSession", FRAMES.format(store="s3"))
    rng = np.random.default_rng(1)
    acquired = []

    def acquire_frame():
        acquired.append(rng.integers(0, 65535, size=(32, 32), dtype="uint16"))
        return acquired[-1]

    dj_staged.enable()
    try:
        with ImagingSession.staged_insert1 as staged:
            staged.rec["subject_id"] = 1
            staged.rec["session_id"] = 1
            z = zarr.open(
                staged.store("frames", ".zarr"), mode="w", shape=(12, 32, 32), chunks=(1, 32, 32), dtype="uint16"
            )
            for i in range(12):
                z[i] = acquire_frame()
            staged.rec["n_frames"] = 12
    finally:
        dj_staged.disable()

    ImagingSession.insert1({"subject_id": 1, "session_id": 2, "n_frames": 12, "frames": np.stack(acquired)})
    staged_meta = column(ImagingSession, {"subject_id": 1, "session_id": 1}, "frames")
    inserted_meta = column(ImagingSession, {"subject_id": 1, "session_id": 2}, "frames")
    assert staged_meta["store"] == "s3" and without_path(staged_meta) == without_path(inserted_meta)
    assert (ImagingSession & {"session_id": 1}).fetch1("n_frames") == 12
    fetched = (ImagingSession & {"session_id": 1}).fetch1("frames")
    assert fetched.read_only
    for i, frame in enumerate(acquired):
        np.testing.assert_array_equal(fetched[i], frame)
    np.testing.assert_array_equal((ImagingSession & {"session_id": 2}).fetch1("frames")[:], fetched[:])


def test_exception_on_s3_removes_the_staged_array(djstaged_schema, djstaged_s3_store):
    import s3fs

    Table = declare(djstaged_schema, "S3Frames", FRAMES.format(store="s3"))
    with pytest.raises(RuntimeError, match="abort"), dj_staged.staged_insert1(Table) as staged:
        staged.rec.update(subject_id=1, session_id=1)
        fsmap = staged.store("frames", ".zarr")
        zarr.open(fsmap, mode="w", shape=(4, 4), chunks=(1, 4), dtype="uint8")[:] = 1
        assert len(fsmap) == 5
        raise RuntimeError("abort")
    spec = djstaged_s3_store.spec
    fs = s3fs.S3FileSystem(key=spec["access_key"], secret=spec["secret_key"], endpoint_url=f"http://{spec['endpoint']}")
    assert fs.find(f"{spec['bucket']}/{spec['location']}") == [] and len(Table()) == 0
