"""``<attach@>`` with ``resume=True`` (issue #27): a write killed at an offset goes on from its durable prefix to
the value DataJoint's own ``insert1`` of the same file stores.

The filename is set before ``open()``, so the stored bytes are ``filename\\0content`` and the content is hashed as
it streams; the killed attempt runs in a child (tests/support/resuming.py) that SIGKILLs itself once the last
durable unit its bytes reach is recorded, so where the next attempt goes on (``f.tell()``, in the content) is
known exactly.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import datajoint as dj
import numpy as np
import pytest
from datajoint.hash_registry import compute_hash
from support import resuming
from support.child import ChildDied, PausableChild
from support.paths import TEST_PYTHONPATH
from support.resumed import stored_value, wait_for_the_killed_session
from support.stores import lease_files, store_files
from support.tables import declare

import dj_staged
from dj_staged.errors import ResumeRestartedWarning
from dj_staged.stores import resolve_store

UNIT = 64 << 10  # DJ_STAGED_PART_SIZE here: a local store's durable unit
S3_UNIT = 5 << 20  # S3's smallest part, to which a smaller DJ_STAGED_PART_SIZE is raised
FILENAME = "session01_raw.dat"
PREFIX = len(FILENAME) + 1  # the stored bytes before the content: the filename and a NUL
LOCAL_SIZE = 5 * UNIT + 1234
LOCAL_OFFSETS = [1, UNIT - PREFIX - 1, UNIT - PREFIX, UNIT, 2 * UNIT + 777, 4 * UNIT, LOCAL_SIZE - 1, LOCAL_SIZE, None]
S3_SIZE = 2 * S3_UNIT + 300_000
S3_OFFSETS = [1, S3_UNIT - PREFIX, S3_UNIT, S3_UNIT + S3_UNIT // 2, 2 * S3_UNIT, S3_SIZE, None]


@pytest.fixture(autouse=True)
def small_units(monkeypatch):
    monkeypatch.setenv("DJ_STAGED_PART_SIZE", str(UNIT))
    monkeypatch.setenv("PYTHONPATH", ":".join(TEST_PYTHONPATH))  # the child imports support/resuming.py


def definition(store) -> str:
    return f"k : int32\n---\nv : <attach@{store.name}>"


def expected_start(kill_at: int | None, size: int, unit: int) -> int:
    """Where the next attempt goes on, in the content: the last durable unit the killed one reached."""
    if kill_at is None:
        return size
    stored = PREFIX + kill_at
    boundary = stored - stored % unit
    return boundary - PREFIX if boundary else 0


def kill_and_resume(djstaged_postgres, djstaged_schema, store, kill_at: int | None, size: int, unit: int, tmp_path):
    table = declare(djstaged_schema, "Resumed", definition(store))
    data = np.random.default_rng(27).bytes(size)
    child = PausableChild(
        resuming.killed_writer,
        dataclasses.asdict(djstaged_postgres),
        dict(dj.config.stores),
        djstaged_schema.database,
        definition(store),
        ".dat",
        {},
        data,
        kill_at,
        FILENAME,
    )
    with child, pytest.raises(ChildDied) as died:
        child.join(timeout=120)
    assert died.value.exitcode == -9
    assert len(table()) == 0
    wait_for_the_killed_session(table)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeRestartedWarning)  # nothing was lost: no restart
        with dj_staged.staged_insert1(table, resume=True) as staged:
            staged.rec["k"] = resuming.KEY
            staged.set_filename("v", FILENAME)
            with staged.open("v", ".dat") as f:
                began = f.tell()
                f.write(data[began:])
    assert began == expected_start(kill_at, size, unit)

    source = tmp_path / "source" / FILENAME  # the same file, inserted by DataJoint itself
    source.parent.mkdir()
    source.write_bytes(data)
    table.insert1({"k": 2, "v": str(source)})
    resumed, plain = stored_value(table, 1), stored_value(table, 2)
    assert resumed == plain  # hash, path, schema, store, size
    with resolve_store(store.name, dj.config).open_read(resumed["path"]) as stored:
        raw = stored.read()
    assert raw == FILENAME.encode() + b"\0" + data and compute_hash(raw) == resumed["hash"]
    for k in (1, 2):
        with dj.config.override(download_path=str(tmp_path / f"downloads{k}")):
            local = Path((table & {"k": k}).fetch1("v"))
        assert local.name == FILENAME and local.read_bytes() == data
    assert all(f == resumed["path"] for f in store_files(store, leases=True))
    assert lease_files(store) == []
    staged_store = resolve_store(store.name, dj.config)
    if staged_store.supports_listing_incomplete_uploads:
        assert staged_store.incomplete_uploads("") == {}


@pytest.mark.parametrize("kill_at", LOCAL_OFFSETS)
def test_an_attachment_killed_at_an_offset_resumes_to_insert1s_value_locally(
    kill_at, djstaged_postgres, djstaged_schema, djstaged_local_store, tmp_path
):
    kill_and_resume(djstaged_postgres, djstaged_schema, djstaged_local_store, kill_at, LOCAL_SIZE, UNIT, tmp_path)


@pytest.mark.parametrize("kill_at", S3_OFFSETS)
def test_an_attachment_killed_at_an_offset_resumes_to_insert1s_value_on_s3(
    kill_at, djstaged_postgres, djstaged_schema, djstaged_s3_store, tmp_path
):
    kill_and_resume(djstaged_postgres, djstaged_schema, djstaged_s3_store, kill_at, S3_SIZE, S3_UNIT, tmp_path)
