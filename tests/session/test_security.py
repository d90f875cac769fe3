"""Input crafted to escape the store, broken stores, and handles or sessions used after they ended.

Each case: a clear error, no row, and nothing written anywhere but the field's own path.
Complements tests/session/test_bad_input.py.
"""

from __future__ import annotations

from pathlib import Path

import datajoint as dj
import numpy as np
import pytest
from support.stores import lease_files, store_files
from support.tables import attempt, declare

import dj_staged
from dj_staged.errors import HandleModeError, InvalidPathError, NotParticipatingError, StagedInsertError


@pytest.fixture
def outside(tmp_path):
    """Every file under the test's temporary folder but outside the store: must not change."""

    def files():
        return sorted(str(p) for p in tmp_path.rglob("*") if p.is_file() and "store" not in p.parts)

    before = files()
    yield files
    assert files() == before


KEY = {"subject": "m1", "session": 1}


@pytest.mark.parametrize("field", ["../raw", "raw/../raw", "/etc/passwd", "raw\x00", "r" * 10_000, "ｒａｗ", "raw "])
def test_crafted_field_names(Mixed, djstaged_local_store, outside, field):
    with pytest.raises(NotParticipatingError):
        attempt(Mixed, KEY, lambda s: s.open(field, ".bin"))
    assert store_files(djstaged_local_store, leases=True) == [] and len(Mixed()) == 0


@pytest.mark.parametrize(
    "filename",
    ["..", "../x.pdf", "/etc/passwd", "a\x00b", "a\\b", "x" * 300, "a／b", "．．", "\u2024\u2024", "sub/x.pdf", ""],
)
def test_crafted_attachment_filenames(Mixed, djstaged_local_store, outside, filename):
    with pytest.raises(InvalidPathError):
        attempt(Mixed, KEY, lambda s: s.set_filename("doc", filename))
    assert store_files(djstaged_local_store, leases=True) == [] and len(Mixed()) == 0


@pytest.mark.parametrize("ext", ["\u2024zarr", ".zarr\n", " .zarr", ".zarr/", ".zarr/../..", ".%2e", ".ﬀ", ".٣"])
def test_more_crafted_extensions(Mixed, djstaged_local_store, outside, ext):
    with pytest.raises(InvalidPathError):
        attempt(Mixed, KEY, lambda s: s.store("raw", ext))
    assert store_files(djstaged_local_store, leases=True) == []


@pytest.mark.parametrize("ext", [b".zarr", Path(".zarr"), 3])
def test_non_string_extension(Mixed, djstaged_local_store, ext):
    with pytest.raises(InvalidPathError):
        attempt(Mixed, KEY, lambda s: s.store("raw", ext))
    assert store_files(djstaged_local_store, leases=True) == []


@pytest.mark.parametrize(
    "subject",
    [
        *("..", ".", "~", "../../escape", "a/../../b", "a\\..\\b", "/abs/path", "c:\\x"),  # relative, absolute
        *("．．", "\u2024\u2024", "a／b", "\u202e../x", "%2e%2e"),  # look-alikes, a direction mark, percent-encoded
        "x" * 200,  # longer than a file name may be
    ],
)
def test_primary_key_values_stay_inside_the_field_directory(Mixed, djstaged_local_store, outside, subject):
    with dj_staged.staged_insert1(Mixed) as staged:
        staged.rec.update(subject=subject, session=1)
        with staged.open("raw", ".bin") as f:
            f.write(b"content")
    path = Mixed.fetch1("raw").path
    root = Path(djstaged_local_store.spec["location"]).resolve()
    assert (root / path).resolve().is_relative_to(root / "_schema" / Mixed.database / Mixed.table_name)
    assert store_files(djstaged_local_store, leases=True) == [path]


def test_partitioned_primary_key_stays_in_the_store(djstaged_schema, djstaged_local_store, outside):
    dj.config.stores["main"] = {**djstaged_local_store.spec, "partition_pattern": "{subject}"}
    Table = declare(djstaged_schema, "Parted", "subject : varchar(64)\n---\nraw : <object@main>")
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["subject"] = "../../../etc"
        with staged.open("raw", ".bin") as f:
            f.write(b"x")
    path = Table.fetch1("raw").path
    root = Path(djstaged_local_store.spec["location"]).resolve()
    assert (root / path).resolve().is_relative_to(root / "_schema")
    assert store_files(djstaged_local_store, leases=True) == [path]


def test_store_location_that_is_a_file(djstaged_schema, djstaged_local_store, tmp_path):
    Table = declare(djstaged_schema, "Filed", "k : int32\n---\nraw : <object@main>")
    location = tmp_path / "not-a-directory"
    location.write_bytes(b"precious")
    dj.config.stores["main"] = {"protocol": "file", "location": str(location)}
    with pytest.raises(StagedInsertError) as raised:
        attempt(Table, {"k": 1}, lambda s: s.open("raw", ".bin"))
    message = str(raised.value)
    assert message.startswith("Store 'main' of field 'raw' is configured but cannot be used. Configured stores: main")
    assert "Inaccessible local directory" in message
    assert location.read_bytes() == b"precious" and len(Table()) == 0


def test_read_only_store_is_a_clear_error(djstaged_schema, dj_faulty_store):
    Table = declare(djstaged_schema, "ReadOnly", "k : int32\n---\nraw : <object@main>\narr : <npy@main>")
    dj_faulty_store.plan.read_only()
    for call in (lambda s: s.open("raw", ".bin"), lambda s: s.open("arr", ".npy")):
        with pytest.raises(OSError, match="Read-only file system"):
            attempt(Table, {"k": 1}, call)
    assert store_files(dj_faulty_store, leases=True) == [] and len(Table()) == 0


def test_write_after_the_handle_was_closed_inside_the_block(Mixed, djstaged_local_store):
    with pytest.raises(ValueError, match="closed file"), dj_staged.staged_insert1(Mixed) as staged:
        staged.rec.update(KEY)
        f = staged.open("raw", ".bin")
        f.write(b"first")
        f.close()
        f.write(b"after close")
    assert store_files(djstaged_local_store, leases=True) == [] and len(Mixed()) == 0


def test_write_through_a_kept_handle_after_the_block(Mixed, djstaged_local_store):
    with dj_staged.staged_insert1(Mixed) as staged:
        staged.rec.update(KEY)
        kept = staged.open("raw", ".bin")
        kept.write(b"committed")
        with staged.open("arr", ".npy") as f:
            np.save(f, np.ones(3))
    with pytest.raises(ValueError, match="closed file"):
        kept.write(b"tampering")
    assert Mixed.fetch1("raw").read() == b"committed"


@pytest.mark.parametrize("ending", ["clean", "exception", "interrupt"])
def test_session_used_after_the_block(Mixed, djstaged_local_store, ending):
    with pytest.raises((RuntimeError, KeyboardInterrupt)) if ending != "clean" else _nothing():
        with dj_staged.staged_insert1(Mixed) as staged:
            staged.rec.update(KEY)
            with staged.open("raw", ".bin") as f:
                f.write(b"x")
            if ending == "exception":
                raise RuntimeError("boom")
            if ending == "interrupt":
                raise KeyboardInterrupt
    files = store_files(djstaged_local_store, leases=True)
    for use in (
        lambda: staged.open("raw", ".bin"),
        lambda: staged.store("raw", ".zarr"),
        lambda: staged.open("arr", ".npy"),
        lambda: staged.set_filename("doc", "a.pdf"),
        lambda: staged.fs,
    ):
        with pytest.raises(HandleModeError):
            use()
    assert store_files(djstaged_local_store, leases=True) == files
    # an interrupted block cleans up nothing in-process: its lease stays, abandoned, naming what it wrote
    assert bool(lease_files(djstaged_local_store)) == (ending == "interrupt")
    assert len(Mixed()) == (1 if ending == "clean" else 0)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
