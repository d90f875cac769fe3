"""Multi-row staged insert: many rows, each with its own objects, committed together."""

from __future__ import annotations

import os

import datajoint as dj
import numpy as np
import psycopg2
import pytest
from support.stores import lease_files, store_files
from support.tables import declare

import dj_staged
from dj_staged.errors import HandleModeError


@pytest.fixture
def Trial(djstaged_schema, djstaged_local_store):
    return declare(
        djstaged_schema,
        "Trial",
        """
        session_id : int32
        trial : int32
        ---
        signal = null : <npy@main>
        payload = null : <blob@main>
        """,
    )


def kinds(store) -> dict[str, int]:
    files = store_files(store)
    return {section: sum(f.startswith(section) for f in files) for section in ("_schema/", "_hash/", "_staging/")}


def stage_row(batch, trial, segment, payload=None):
    with batch.row() as staged:
        staged.rec["session_id"] = 1
        staged.rec["trial"] = trial
        with staged.open("signal", ".npy") as f:
            np.save(f, segment, allow_pickle=False)
        if payload is not None:
            with staged.open("payload", ".bin") as f:
                f.write(payload)


def test_rows_commit_together_on_clean_exit(Trial, djstaged_local_store):
    segments = [np.full(100, i, dtype="float32") for i in range(6)]
    with dj_staged.staged_insert(Trial, chunk_size=4) as batch:
        for i, segment in enumerate(segments):
            stage_row(batch, i, segment, payload=b"shared" if i % 2 else os.urandom(100))
            assert len(Trial()) == 0  # nothing is visible before the outer block ends
        assert len(batch) == 6
    rows = {r["trial"]: r for r in Trial.to_dicts()}
    assert sorted(rows) == list(range(6))
    for i, segment in enumerate(segments):
        np.testing.assert_array_equal(rows[i]["signal"].load(), segment)
    assert all(rows[i]["payload"] == b"shared" for i in (1, 3, 5))
    assert kinds(djstaged_local_store) == {"_schema/": 6, "_hash/": 4, "_staging/": 0}  # 3 distinct + 1 shared
    assert lease_files(djstaged_local_store) == []


def test_rows_with_different_columns_are_grouped(Trial, djstaged_local_store):
    with dj_staged.staged_insert(Trial, chunk_size=2) as batch:
        for i in range(5):
            stage_row(batch, i, np.arange(i + 1), payload=b"p" if i < 2 else None)
    rows = {r["trial"]: r for r in Trial.to_dicts()}
    assert [rows[i]["payload"] for i in range(5)] == [b"p", b"p", None, None, None]


def test_exception_escaping_the_batch_unwinds_every_row(Trial, djstaged_local_store):
    Trial.insert1({"session_id": 0, "trial": 0, "payload": b"kept"})
    before = store_files(djstaged_local_store)
    with pytest.raises(RuntimeError, match="rig failure"), dj_staged.staged_insert(Trial) as batch:
        for i in range(3):
            stage_row(batch, i, np.ones(10), payload=b"kept" if i == 0 else os.urandom(50))
        with batch.row() as staged:
            staged.rec.update(session_id=1, trial=3)
            with staged.open("signal", ".npy") as f:
                np.save(f, np.ones(10))
            raise RuntimeError("rig failure")
    assert len(Trial()) == 1 and Trial.fetch1("payload") == b"kept"
    left = kinds(djstaged_local_store)
    assert left["_schema/"] == 0 and left["_staging/"] == 0
    assert set(before) <= set(store_files(djstaged_local_store))  # canonical hash objects stay, shared one intact
    assert lease_files(djstaged_local_store) == []


def test_caught_row_exception_unwinds_that_row_only(Trial, djstaged_local_store):
    with dj_staged.staged_insert(Trial) as batch:
        stage_row(batch, 0, np.zeros(4))
        try:
            with batch.row() as staged:
                staged.rec.update(session_id=1, trial=1)
                with staged.open("signal", ".npy") as f:
                    np.save(f, np.zeros(4))
                raise ValueError("bad segment")
        except ValueError:
            pass
        stage_row(batch, 1, np.ones(4))  # the key of the unwound row is free again
    rows = {r["trial"]: r["signal"].load() for r in Trial.to_dicts()}
    np.testing.assert_array_equal(rows[1], np.ones(4))
    assert kinds(djstaged_local_store)["_schema/"] == 2


def test_failed_commit_leaves_no_rows(Trial, djstaged_local_store):
    Trial.insert1({"session_id": 1, "trial": 2})
    with pytest.raises(dj.errors.DuplicateError), dj_staged.staged_insert(Trial, chunk_size=2) as batch:
        for i in range(4):
            stage_row(batch, i, np.ones(3), payload=os.urandom(20))
    assert len(Trial()) == 1  # the existing row only: the batch's first chunk was rolled back
    assert kinds(djstaged_local_store)["_schema/"] == 0 and kinds(djstaged_local_store)["_staging/"] == 0


def test_duplicate_key_in_batch_rejected_before_bytes(Trial, djstaged_local_store):
    with dj_staged.staged_insert(Trial) as batch:
        stage_row(batch, 0, np.zeros(2))
        with pytest.raises(dj.errors.DuplicateError):
            with batch.row() as staged:
                staged.rec.update(session_id=1, trial=0)
                staged.open("signal", ".npy")
        assert kinds(djstaged_local_store)["_schema/"] == 1
        with pytest.raises(dj.errors.DuplicateError):
            with batch.row() as staged:
                staged.rec.update(session_id=1, trial=0)  # stages nothing: caught at the row's exit
    assert len(Trial()) == 1


def test_row_outside_or_nested_is_rejected(Trial):
    with dj_staged.staged_insert(Trial) as batch:
        with batch.row() as staged:
            staged.rec.update(session_id=1, trial=0)
            with pytest.raises(HandleModeError):
                batch.row()
    with pytest.raises(HandleModeError):
        batch.row()
    assert len(Trial()) == 1


def test_table_staged_insert_after_enable(Trial, djstaged_local_store):
    dj_staged.enable()
    try:
        for target in (Trial, Trial()):
            with target.staged_insert as batch:
                stage_row(batch, len(Trial()), np.arange(3))
        assert len(Trial()) == 2
    finally:
        dj_staged.disable()
    assert not hasattr(Trial(), "staged_insert")


@pytest.fixture
def Noted(djstaged_schema, djstaged_local_store):
    return declare(
        djstaged_schema,
        "Noted",
        """
        k : int32
        ---
        note : varchar(8)
        signal : <npy@main>
        unique index (note)
        """,
    )


def noted_row(batch, k, note=None, *, note_after=None, reached=None):
    with batch.row() as staged:
        staged.rec["k"] = k
        if note is not None:
            staged.rec["note"] = note
        with staged.open("signal", ".npy") as f:
            if reached is not None:
                reached.append(k)
            np.save(f, np.full(3, k), allow_pickle=False)
        if note_after is not None:
            staged.rec["note"] = note_after


def test_a_row_tried_at_its_first_handle_is_refused_before_its_bytes(Noted, djstaged_local_store):
    """From a batch's second row on, the first handle tries the whole row (one round trip, none at its exit)."""
    Noted.insert1({"k": 0, "note": "taken", "signal": np.zeros(3)})
    reached: list[int] = []
    with dj_staged.staged_insert(Noted) as batch:
        noted_row(batch, 1, "first", reached=reached)
        with pytest.raises(dj.errors.DuplicateError, match="already in"):
            noted_row(batch, 0, "other", reached=reached)  # its key is in the table
        with pytest.raises(dj.errors.DuplicateError) as other_index:
            noted_row(batch, 2, "taken", reached=reached)  # another unique index: DataJoint's own error
        noted_row(batch, 3, "third", reached=reached)
    assert "already in" not in str(other_index.value) and reached == [1, 3]
    assert sorted(Noted.to_arrays("k").tolist()) == [0, 1, 3]
    assert len(store_files(djstaged_local_store)) == 3 and lease_files(djstaged_local_store) == []


def test_a_row_changed_after_its_first_handle_is_checked_again_at_its_exit(Noted, djstaged_local_store):
    Noted.insert1({"k": 0, "note": "taken", "signal": np.zeros(3)})
    with dj_staged.staged_insert(Noted) as batch:
        noted_row(batch, 1, "first")
        noted_row(batch, 2, note_after="second")  # no note at the first handle: the trial could not decide
        with pytest.raises(dj.errors.DuplicateError):
            noted_row(batch, 3, "third", note_after="taken")  # tried with "third", then changed
        with pytest.raises(psycopg2.errors.StringDataRightTruncation):
            noted_row(batch, 4, "fourth", note_after="far too long for eight")
    assert {(r["k"], r["note"]) for r in Noted.to_dicts()} == {(0, "taken"), (1, "first"), (2, "second")}
    assert len(store_files(djstaged_local_store)) == 3 and lease_files(djstaged_local_store) == []
