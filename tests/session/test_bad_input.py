"""Bad input to store()/open(): a clear DataJointError, no row, nothing in the store."""

from __future__ import annotations

import datajoint as dj
import numpy as np
import pytest
from support.stores import store_files
from support.tables import attempt, declare

import dj_staged
from dj_staged.errors import (
    HandleModeError,
    InvalidPathError,
    MissingPrimaryKeyError,
    NotParticipatingError,
    StagedInsertError,
)


@pytest.mark.parametrize("rec", [{}, {"subject": "m1"}, {"session": 1}])
@pytest.mark.parametrize("method", ["store", "open"])
def test_missing_primary_key(Mixed, djstaged_local_store, rec, method):
    with pytest.raises(MissingPrimaryKeyError, match=r"Primary key values must be set in staged.rec before calling"):
        attempt(Mixed, rec, lambda s: getattr(s, method)("raw", ".bin"))
    assert store_files(djstaged_local_store) == [] and len(Mixed()) == 0


def test_field_not_in_table(Mixed, djstaged_local_store):
    with pytest.raises(NotParticipatingError):
        attempt(Mixed, {"subject": "m", "session": 1}, lambda s: s.open("nope", ".bin"))
    assert store_files(djstaged_local_store) == []


@pytest.mark.parametrize(
    "field, message",
    [
        ("count", "not an object-store codec field"),
        ("inline", "stored in the table"),
        ("inline_attach", "stored in the table"),
    ],
)
def test_non_participating_fields_rejected_before_writing(Mixed, djstaged_local_store, field, message):
    with pytest.raises(NotParticipatingError, match=message) as raised:
        attempt(Mixed, {"subject": "m", "session": 1}, lambda s: s.open(field, ".bin"))
    assert raised.value.field == field
    assert store_files(djstaged_local_store) == [] and len(Mixed()) == 0


@pytest.mark.parametrize(
    "ext", ["../x", "a/b", "/etc/passwd", "..", ".a\\b", ".x\x00", ".ｚａｒｒ", ".a..b", "." + "x" * 40]
)
def test_escaping_extension_rejected(Mixed, djstaged_local_store, ext):
    with pytest.raises(InvalidPathError):
        attempt(Mixed, {"subject": "m", "session": 1}, lambda s: s.open("raw", ext))
    assert store_files(djstaged_local_store) == [] and len(Mixed()) == 0


def test_nul_in_primary_key_rejected(Mixed, djstaged_local_store):
    with pytest.raises(InvalidPathError):
        attempt(Mixed, {"subject": "a\x00b", "session": 1}, lambda s: s.open("raw", ".bin"))
    assert store_files(djstaged_local_store) == []


def test_unconfigured_store(djstaged_schema, djstaged_local_store):
    Table = declare(djstaged_schema, "Elsewhere", "k : int32\n---\nraw : <object@main>")
    dj.config.stores = {"other": djstaged_local_store.spec}  # neither 'main' nor a default any more
    with pytest.raises(StagedInsertError) as raised:
        attempt(Table, {"k": 1}, lambda s: s.store("raw", ".zarr"))
    assert str(raised.value).startswith(
        "Store 'main' of field 'raw' is not configured. Configured stores: other (no stores.default); use one of "
        "them in the table definition, or add stores.main to datajoint.json or DJ_STORES. (DataJointError: "
    )
    assert raised.value.field == "raw"
    assert store_files(djstaged_local_store) == []


EMPTY_STORE_REFUSED = "Storage '' is requested but not configured in stores"


@pytest.mark.parametrize("codec", ["object", "npy", "blob", "attach", "hash"])
@pytest.mark.parametrize("method", ["store", "open"])
def test_no_store_name_is_refused_as_insert1_refuses_it(djstaged_schema, djstaged_local_store, tmp_path, codec, method):
    """`<codec@>` means stores.default in DataJoint's docs, but 2.3.5's own insert1 refuses it: so do we."""
    Table = declare(djstaged_schema, f"Unnamed{codec.capitalize()}", f"k : int32\n---\nv : <{codec}@>")
    attachment = tmp_path / "a.txt"
    attachment.write_text("content")
    value = {"object": str(attachment), "npy": np.arange(3), "attach": str(attachment)}.get(codec, b"content")
    with pytest.raises(dj.DataJointError, match=EMPTY_STORE_REFUSED):
        Table.insert1({"k": 1, "v": value})
    with pytest.raises(StagedInsertError, match=EMPTY_STORE_REFUSED) as raised:
        attempt(Table, {"k": 2}, lambda s: getattr(s, method)("v", ".bin"))
    assert raised.value.field == "v"
    assert f"field 'v' is declared <{codec}@> with no store name" in str(raised.value)
    assert str(raised.value).endswith(f"name the store in the table definition: <{codec}@main>")
    assert len(Table()) == 0 and store_files(djstaged_local_store, leases=True) == []


def test_read_mode_is_rejected(Mixed, djstaged_local_store):
    with pytest.raises(HandleModeError):
        attempt(Mixed, {"subject": "m", "session": 1}, lambda s: s.open("raw", ".bin", mode="rb"))
    assert store_files(djstaged_local_store) == []


def test_set_filename_on_a_non_attachment_field(Mixed):
    with pytest.raises(HandleModeError):
        attempt(Mixed, {"subject": "m", "session": 1}, lambda s: s.set_filename("raw", "x.bin"))


def test_cleanup_error_never_masks_the_original(djstaged_schema, djstaged_local_store, caplog):
    from datajoint.builtin_codecs.schema import SchemaCodec

    class BrokenCleanupCodec(dj_staged.SchemaAddressedStaging, SchemaCodec):
        name = "brokencleanup_test"

        def encode(self, value, *, key=None, context=None, store_name=None):
            raise NotImplementedError

        def decode(self, stored, *, key=None, context=None):
            return stored

        def cleanup_staged(self, field):
            raise OSError("store unreachable during cleanup")

    try:
        Table = declare(djstaged_schema, "Broken", "k : int32\n---\nraw : <brokencleanup_test@main>\narr : <npy@main>")
        with pytest.raises(ValueError, match="the real problem"), dj_staged.staged_insert1(Table) as staged:
            staged.rec["k"] = 1
            with staged.open("raw", ".bin") as f:
                f.write(b"x")
            with staged.open("arr", ".npy") as f:
                np.save(f, np.ones(3))
            raise ValueError("the real problem")
        assert "Cleanup of staged field 'raw' failed" in caplog.text
        # the other field was still cleaned up; the broken one is left for gc
        assert [p for p in store_files(djstaged_local_store) if p.endswith(".npy")] == []
        assert len(Table()) == 0
    finally:
        dj.codecs.unregister_codec("brokencleanup_test")
