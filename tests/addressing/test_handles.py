"""Hash-addressed handles address the caller's content, never the stored prefix.

An attachment stores ``filename\\0`` before the content and a ``<blob@>`` stores
its header; ``tell()``, ``seek()`` and ``truncate()`` on the handle must behave
exactly like a plain file holding only the content. Hypothesis drives random
writes, seeks and truncates against a plain temporary file as the model, for
every prefix layout, and the fetched value must be what the model holds.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import datajoint as dj
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.tables import declare

import dj_staged

LAYOUTS = ["hash", "attach-name-first", "attach-name-last", "blob-with-size", "blob-without-size"]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.binary(min_size=0, max_size=300)),
        st.tuples(st.just("seek"), st.integers(min_value=0, max_value=400), st.sampled_from([0, 1, 2])),
        st.tuples(st.just("truncate"), st.one_of(st.none(), st.integers(min_value=0, max_value=400))),
    ),
    max_size=12,
)


def apply(handle, operation) -> None:
    """Apply one operation to a file-like object (the model or the staged handle)."""
    kind, *args = operation
    if kind == "write":
        handle.write(args[0])
    elif kind == "truncate":
        handle.truncate(args[0])
    else:
        target, whence = args
        if whence == 0:
            handle.seek(target, 0)
        elif whence == 1:
            handle.seek(target - handle.tell(), 1)  # lands on ``target``, relative to the current position
        else:
            end = handle.seek(0, 2)
            handle.seek(target - end, 2)


def model_of(script) -> bytes:
    """What a plain file holds after ``script`` (a real file: ``truncate`` past the end extends it with zeros)."""
    with tempfile.TemporaryFile() as model:
        for operation in script:
            apply(model, operation)
        model.seek(0)
        return model.read()


@pytest.fixture
def Table(djstaged_schema, djstaged_local_store):
    return declare(
        djstaged_schema,
        "Seekable",
        "k : int32\n---\nh = null : <hash@main>\na = null : <attach@main>\nb = null : <blob@main>",
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=operations)
def test_seek_and_overwrite_store_exactly_the_content(Table, tmp_path, layout, script):
    keys = test_seek_and_overwrite_store_exactly_the_content.keys
    key = next(keys)
    model = model_of(script)
    field = {"hash": "h", "attach-name-first": "a", "attach-name-last": "a"}.get(layout, "b")
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = key
        if layout == "attach-name-first":
            staged.set_filename("a", "content.bin")
        size = len(model) if layout == "blob-with-size" else None
        with staged.open(field, ".bin", size=size) as handle, tempfile.TemporaryFile() as mirror:
            for operation in script:
                apply(handle, operation)
                apply(mirror, operation)
                assert handle.tell() == mirror.tell()
        if layout == "attach-name-last":
            staged.set_filename("a", "content.bin")
    with dj.config.override(download_path=str(tmp_path / f"d{key}")):
        fetched = (Table & {"k": key}).fetch1(field)
    if field == "a":
        with open(fetched, "rb") as f:
            fetched = f.read()
    assert fetched == model


test_seek_and_overwrite_store_exactly_the_content.keys = itertools.count(1)


@pytest.mark.parametrize("layout", ["attach-name-first", "blob-with-size"])
def test_the_prefix_cannot_be_reached(Table, layout, tmp_path):
    field = "a" if layout.startswith("attach") else "b"
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        if field == "a":
            staged.set_filename("a", "kept.txt")
        with staged.open(field, ".bin", size=5 if field == "b" else None) as handle:
            handle.write(b"hello")
            with pytest.raises(ValueError):
                handle.seek(-6, 1)  # one byte before the content's start
            with pytest.raises(ValueError):
                handle.seek(-1)
            assert handle.tell() == 5
    with dj.config.override(download_path=str(tmp_path)):
        fetched = (Table & {"k": 1}).fetch1(field)
    assert (Path(fetched).read_bytes() if field == "a" else fetched) == b"hello"
