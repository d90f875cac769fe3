"""Staged <object@> and <npy@> rows against rows written by DataJoint's own insert1."""

from __future__ import annotations

from pathlib import Path

import datajoint as dj
import numpy as np
import pytest
import zarr
from support.stores import store_files
from support.tables import declare, stage_recording

import dj_staged
from dj_staged.errors import ContentError, HandleModeError, NothingWrittenError, StagedInsertError

TOKEN_AND_TIME = ("path", "timestamp")


def column(table, key, field):
    """The raw JSON column value, as the database holds it."""
    conn = table.connection
    name = table.full_table_name
    pk = " AND ".join(f"{k} = {v}" for k, v in key.items())
    return conn.query(f"SELECT {field} FROM {name} WHERE {pk}").fetchone()[0]


def strip(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in TOKEN_AND_TIME}


def same_path_shape(a: str, b: str) -> bool:
    """Equal paths but for the random token before the extension."""
    head_a, _, name_a = a.rpartition("/")
    head_b, _, name_b = b.rpartition("/")
    return (
        head_a == head_b and name_a.split("_")[0] == name_b.split("_")[0] and Path(name_a).suffix == Path(name_b).suffix
    )


def test_npy_staged_row_equals_insert1_row(Recording, tmp_path):
    array = np.arange(24, dtype=np.float32).reshape(4, 6)
    source = tmp_path / "raw.bin"
    source.write_bytes(b"r" * 100)
    Recording.insert1({"recording_id": 1, "waveform": array, "raw": str(source)})
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 2
        with staged.open("waveform", ".npy") as f:
            np.save(f, array, allow_pickle=False)
        with staged.open("raw", ".bin") as f:
            f.write(b"r" * 100)
    ordinary, ours = (
        column(Recording, {"recording_id": 1}, "waveform"),
        column(Recording, {"recording_id": 2}, "waveform"),
    )
    assert set(ours) == set(ordinary) == {"path", "store", "dtype", "shape"}
    assert strip(ours) == strip(ordinary)
    assert ours["path"].split("/")[:-2] == ordinary["path"].split("/")[:-2]
    assert ours["path"].endswith(".npy") and ours["path"].split("/")[-2] == "recording_id=2"
    raw1, raw2 = column(Recording, {"recording_id": 1}, "raw"), column(Recording, {"recording_id": 2}, "raw")
    assert set(raw2) == set(raw1)
    assert strip(raw2) == strip(raw1)
    assert {type(v) for v in raw2.values()} == {type(v) for v in raw1.values()}
    ref = (Recording & {"recording_id": 2}).fetch1("waveform")
    assert isinstance(ref, dj.builtin_codecs.npy.NpyRef)
    np.testing.assert_array_equal(ref.load(), array)
    assert (Recording & {"recording_id": 2}).fetch1("raw").read() == b"r" * 100


def test_object_directory_row_equals_insert1_row(Recording, tmp_path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"alpha")
    (folder / "sub" / "b.txt").write_bytes(b"beta!")
    Recording.insert1({"recording_id": 1, "waveform": np.zeros(1), "raw": str(folder)})
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 2
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.zeros(1))
        fsmap = staged.store("raw")
        fsmap["a.txt"] = b"alpha"
        fsmap["sub/b.txt"] = b"beta!"
    ordinary, ours = column(Recording, {"recording_id": 1}, "raw"), column(Recording, {"recording_id": 2}, "raw")
    assert strip(ours) == strip(ordinary) == {"store": "main", "size": 10, "ext": None, "is_dir": True, "item_count": 2}
    assert same_path_shape(ours["path"].replace("=2/", "=1/"), ordinary["path"])


def test_object_zarr_through_store_fetches_back(Recording):
    data = np.arange(60, dtype="int16").reshape(6, 10)
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 5
        with staged.open("waveform", ".npy") as f:
            np.save(f, data)
        z = zarr.open(staged.store("raw", ".zarr"), mode="w", shape=data.shape, chunks=(2, 10), dtype="int16")
        for i in range(0, 6, 2):
            z[i : i + 2] = data[i : i + 2]
    meta = column(Recording, {"recording_id": 5}, "raw")
    assert meta["is_dir"] is True and meta["ext"] == ".zarr" and meta["item_count"] == 4  # zarr.json + 3 chunks
    ref = (Recording & {"recording_id": 5}).fetch1("raw")
    np.testing.assert_array_equal(zarr.open(ref.fsmap, mode="r")[:], data)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not an npy file at all", "valid .npy"),
        ("truncated", "truncated"),
        ("object", "object-dtype"),
        ("trailing", "trailing"),
    ],
)
def test_npy_bad_content_leaves_nothing(Recording, djstaged_local_store, content, message):
    with pytest.raises(ContentError, match=message) as raised, dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 3
        with staged.open("raw", ".bin") as f:
            f.write(b"a valid raw value")
        with staged.open("waveform", ".npy") as f:
            if content == "truncated":
                np.save(f, np.arange(1000.0))
                f.seek(-8, 2)
                f.truncate()
            elif content == "object":
                np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
            elif content == "trailing":
                np.save(f, np.arange(10.0))
                f.write(b"extra")
            else:
                f.write(content)
    assert raised.value.field == "waveform"
    assert len(Recording()) == 0
    assert store_files(djstaged_local_store) == []


def test_npy_store_mode_is_rejected(Recording, djstaged_local_store):
    with pytest.raises(HandleModeError):
        with dj_staged.staged_insert1(Recording) as staged:
            staged.rec["recording_id"] = 1
            staged.store("waveform", ".npy")
    assert store_files(djstaged_local_store) == [] and len(Recording()) == 0


def test_exception_after_bytes_written_unwinds(Recording, djstaged_local_store):
    with pytest.raises(RuntimeError, match="acquisition failed"), dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.ones(100))
        staged.store("raw", ".zarr")["zarr.json"] = b"{}"
        assert len(store_files(djstaged_local_store)) == 2
        raise RuntimeError("acquisition failed")
    assert store_files(djstaged_local_store) == []
    assert len(Recording()) == 0


def test_keyboard_interrupt_propagates_without_cleanup(Recording, djstaged_local_store):
    with pytest.raises(KeyboardInterrupt), dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("raw", ".bin") as f:
            f.write(b"partial")
        raise KeyboardInterrupt
    assert len(store_files(djstaged_local_store)) == 1  # left for `dj-staged gc`, as the spec says
    assert len(Recording()) == 0


def test_duplicate_key_unwinds_and_keeps_existing_row(Recording, djstaged_local_store):
    stage_recording(Recording, {"recording_id": 1}, raw=b"first", waveform=np.arange(3.0))
    before = store_files(djstaged_local_store)
    with pytest.raises(dj.errors.DuplicateError):
        stage_recording(Recording, {"recording_id": 1}, raw=b"second", waveform=np.arange(5.0))
    assert store_files(djstaged_local_store) == before
    assert (Recording & {"recording_id": 1}).fetch1("raw").read() == b"first"
    np.testing.assert_array_equal((Recording & {"recording_id": 1}).fetch1("waveform").load(), np.arange(3.0))


def test_same_field_twice_reuses_location_and_rejects_other_extension(Recording):
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.arange(3.0))
        first = staged.store("raw", ".zarr")
        first["a"] = b"1"
        second = staged.store("raw", ".zarr")
        second["b"] = b"2"
        assert first.root == second.root
        with pytest.raises(HandleModeError):
            staged.store("raw", ".h5")
    assert column(Recording, {"recording_id": 1}, "raw")["item_count"] == 2


def change_the_key_after_the_handles(staged) -> None:
    with staged.open("raw", ".bin") as f:
        f.write(b"x")
    with staged.open("waveform", ".npy") as f:
        np.save(f, np.ones(2))
    staged.rec["recording_id"] = 2


def write_nothing_through_a_handle(staged) -> None:
    with staged.open("waveform", ".npy") as f:
        np.save(f, np.ones(2))
    staged.store("raw", ".zarr")


@pytest.mark.parametrize(
    ("misuse", "error"),
    [(change_the_key_after_the_handles, StagedInsertError), (write_nothing_through_a_handle, NothingWrittenError)],
    ids=["primary-key-changed-after-handle", "nothing-written"],
)
def test_a_refused_block_leaves_no_row_and_nothing_in_the_store(Recording, djstaged_local_store, misuse, error):
    with pytest.raises(error), dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        misuse(staged)
    assert store_files(djstaged_local_store) == [] and len(Recording()) == 0


def test_session_is_closed_after_the_block(Recording):
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.ones(2))
        with staged.open("raw", ".bin") as f:
            f.write(b"x")
    with pytest.raises(HandleModeError):
        staged.open("raw", ".bin")


def test_heading_and_codecs_are_untouched(Recording, tmp_path):
    stage_recording(Recording, {"recording_id": 1}, raw=b"x", waveform=np.ones(2))
    assert Recording.heading["waveform"].codec.name == "npy"
    assert Recording.heading["raw"].codec.name == "object"
    source = tmp_path / "x.bin"
    source.write_bytes(b"y")
    Recording.insert1({"recording_id": 2, "waveform": np.zeros(3), "raw": str(source)})
    np.testing.assert_array_equal((Recording & {"recording_id": 2}).fetch1("waveform").load(), np.zeros(3))


def test_no_store_name_resolves_for_a_codec_whose_insert1_resolves_it(djstaged_schema, djstaged_local_store):
    """A codec whose own insert1 reads `<codec@>` as stores.default says so; its staged rows then record that store."""
    from datajoint.builtin_codecs.schema import SchemaCodec

    class DefaultStoreCodec(dj_staged.SchemaAddressedStaging, SchemaCodec):
        name = "default_store_test"
        staged_modes = ("open",)
        resolves_empty_store_name = True

        def encode(self, value, *, key=None, context=None, store_name=None):
            store = store_name or dj.config.stores["default"]
            schema, table, field, primary_key = self._extract_context(key, context)
            path, _ = self._build_path(schema, table, field, primary_key, ext=".txt", store_name=store)
            self._get_backend(store).put_buffer(value, path)
            return {"path": path, "store": store, "size": len(value)}

        def decode(self, stored, *, key=None, context=None):
            return self._get_backend(stored["store"]).get_buffer(stored["path"])

        def _enrich_staged_metadata(self, base, field):
            return {"path": base["path"], "store": base["store"], "size": base["size"]}

    try:
        Table = declare(djstaged_schema, "Plain", "k : int32\n---\nv : <default_store_test@>")
        Table.insert1({"k": 1, "v": b"hello"})
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["k"] = 2
            with staged.open("v", ".txt") as f:
                f.write(b"hello")
        inserted, staged_value = column(Table, {"k": 1}, "v"), column(Table, {"k": 2}, "v")
        assert staged_value["store"] == inserted["store"] == "main" and staged_value["size"] == inserted["size"]
        assert (Table & "k=2").fetch1("v") == b"hello"
    finally:
        dj.codecs.unregister_codec("default_store_test")


def test_custom_schema_addressed_codec_participates(djstaged_schema, djstaged_local_store):
    from datajoint.builtin_codecs.schema import SchemaCodec

    class PageCountCodec(dj_staged.SchemaAddressedStaging, SchemaCodec):
        name = "pagecount_test"
        staged_modes = ("store",)

        def encode(self, value, *, key=None, context=None, store_name=None):
            raise NotImplementedError("staged only")

        def decode(self, stored, *, key=None, context=None):
            return stored["pages"]

        def _enrich_staged_metadata(self, base, field):
            return {"path": base["path"], "store": base["store"], "pages": base["item_count"]}

    try:
        Table = declare(djstaged_schema, "Pages", "k : int32\n---\npages : <pagecount_test@main>")
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["k"] = 1
            fsmap = staged.store("pages", ".d")
            for i in range(3):
                fsmap[f"p{i}"] = b"page"
        assert (Table & "k=1").fetch1("pages") == 3
    finally:
        dj.codecs.unregister_codec("pagecount_test")
