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
from dj_staged import steps
from dj_staged._datajoint import backend_pid
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


def noted_row(batch, k, note=None, *, note_after=None, **plain):
    with batch.row() as staged:
        staged.rec.update(k=k, **plain)
        if note is not None:
            staged.rec["note"] = note
        with staged.open("signal", ".npy") as f:
            np.save(f, np.full(3, k), allow_pickle=False)
        if note_after is not None:
            staged.rec["note"] = note_after


def test_what_needs_no_server_refuses_a_row_at_its_exit_and_the_rest_refuses_the_batch(Noted, djstaged_local_store):
    """A batch's row is checked at its exit without a round trip: a missing NOT NULL value and an unknown attribute
    refuse that row; what only the server refuses (another unique index, a value its type refuses) fails the final
    INSERT, and the whole batch unwinds, as with DataJoint's insert(list)."""
    Noted.insert1({"k": 0, "note": "taken", "signal": np.zeros(3)})
    with dj_staged.staged_insert(Noted) as batch:
        noted_row(batch, 1, "first")
        with pytest.raises(dj.errors.MissingAttributeError, match=r"staged row \{'k': 2\} .* no value for note"):
            noted_row(batch, 2)
        with pytest.raises(KeyError, match="`color` is not in the table heading"):
            noted_row(batch, 3, "third", color="red")
        noted_row(batch, 4, note_after="fourth")  # set after the handle: checked at the exit all the same
    assert {(r["k"], r["note"]) for r in Noted.to_dicts()} == {(0, "taken"), (1, "first"), (4, "fourth")}
    for note, refusal in (
        ("taken", dj.errors.DuplicateError),
        ("far too long", psycopg2.errors.StringDataRightTruncation),
    ):
        with pytest.raises(refusal), dj_staged.staged_insert(Noted) as batch:
            noted_row(batch, 5, "fifth")
            noted_row(batch, 6, note)
        assert sorted(Noted.to_arrays("k").tolist()) == [0, 1, 4]
        assert len(store_files(djstaged_local_store)) == 3 and lease_files(djstaged_local_store) == []


def test_a_key_in_the_table_refuses_the_first_row_before_its_first_byte(Trial, djstaged_local_store):
    Trial.insert1({"session_id": 1, "trial": 0})
    reached = []
    with dj_staged.staged_insert(Trial) as batch:
        with pytest.raises(dj.errors.DuplicateError, match="already in"), batch.row() as staged:
            staged.rec.update(session_id=1, trial=0)
            staged.open("signal", ".npy")
            reached.append("after open")
        stage_row(batch, 1, np.ones(2))
    assert reached == [] and sorted(Trial.to_arrays("trial").tolist()) == [0, 1]
    assert kinds(djstaged_local_store)["_schema/"] == 1


def test_a_later_rows_key_in_the_table_is_refused_at_its_exit_and_its_bytes_reclaimed_at_once(
    Trial, djstaged_local_store
):
    Trial.insert1({"session_id": 1, "trial": 5})
    answers = []
    with steps.observe("writer.key", lambda key, found, **_: answers.append((key["trial"], found))):
        with dj_staged.staged_insert(Trial) as batch:
            stage_row(batch, 0, np.zeros(2))
            with pytest.raises(dj.errors.DuplicateError, match=r"\{'session_id': 1, 'trial': 5\} is already in"):
                stage_row(batch, 5, np.full(2, 5.0))  # its bytes are written, then it is refused at its exit
            assert kinds(djstaged_local_store)["_schema/"] == 1  # the refused row's file is gone, the batch still open
            stage_row(batch, 6, np.ones(2))
    assert answers == [(5, True), (6, False)]  # looked up while the rows wrote, answered at their exits
    assert sorted(Trial.to_arrays("trial").tolist()) == [0, 5, 6] and (Trial & "trial = 5").fetch1("signal") is None
    assert kinds(djstaged_local_store)["_schema/"] == 2 and lease_files(djstaged_local_store) == []


def another_session(djstaged_postgres):
    return dj.Connection(
        djstaged_postgres.host, djstaged_postgres.user, djstaged_postgres.password, djstaged_postgres.port
    )


def test_a_key_another_session_commits_before_the_rows_lookup_refuses_the_row(
    Trial, djstaged_local_store, djstaged_postgres
):
    other = another_session(djstaged_postgres)
    with dj_staged.staged_insert(Trial) as batch:
        stage_row(batch, 0, np.zeros(2))
        other.query(f"INSERT INTO {Trial.full_table_name} (session_id, trial) VALUES (1, 1)")
        with pytest.raises(dj.errors.DuplicateError, match="'trial': 1} is already in"):
            stage_row(batch, 1, np.ones(2))
        stage_row(batch, 2, np.ones(2))
    assert sorted(Trial.to_arrays("trial").tolist()) == [0, 1, 2] and kinds(djstaged_local_store)["_schema/"] == 2
    other.close()


def test_a_key_another_session_commits_after_the_rows_lookup_fails_the_whole_batch(
    Trial, djstaged_local_store, djstaged_postgres
):
    other = another_session(djstaged_postgres)

    def commit_the_same_key(key, found, **_):
        other.query(f"INSERT INTO {Trial.full_table_name} (session_id, trial) VALUES (1, %s)", args=(key["trial"],))

    with pytest.raises(dj.errors.DuplicateError), dj_staged.staged_insert(Trial) as batch:
        stage_row(batch, 0, np.zeros(2))
        with steps.observe("writer.key", commit_the_same_key):  # answered "absent", then the key is taken
            stage_row(batch, 1, np.ones(2))
        stage_row(batch, 2, np.ones(2))
    assert Trial.to_arrays("trial").tolist() == [1] and (Trial & "trial = 1").fetch1("signal") is None
    assert kinds(djstaged_local_store)["_schema/"] == 0 and lease_files(djstaged_local_store) == []
    other.close()


def statements_sent(observer) -> dict:
    """When each other client session last sent a statement: any statement sent changes it."""
    query = "SELECT pid, query_start FROM pg_stat_activity WHERE backend_type = 'client backend'"
    return dict(observer.query(query + " AND pid <> pg_backend_pid()").fetchall())


def test_a_key_repeated_in_the_batch_is_refused_before_its_bytes_without_a_round_trip(
    Trial, djstaged_local_store, djstaged_postgres
):
    observer = another_session(djstaged_postgres)
    reached = []
    with dj_staged.staged_insert(Trial) as batch:
        stage_row(batch, 0, np.zeros(2))
        stage_row(batch, 1, np.zeros(2))  # the batch's second session is open from here on
        before = statements_sent(observer)
        with pytest.raises(dj.errors.DuplicateError, match="within this staged batch"), batch.row() as staged:
            staged.rec.update(session_id=1, trial=1)
            staged.open("signal", ".npy")
            reached.append("after open")
        assert statements_sent(observer) == before and len(before) >= 2
    assert reached == [] and sorted(Trial.to_arrays("trial").tolist()) == [0, 1]
    observer.close()


def test_a_lookup_whose_session_died_is_made_on_the_tables_connection(Trial, djstaged_local_store, djstaged_postgres):
    Trial.insert1({"session_id": 1, "trial": 3})
    observer = another_session(djstaged_postgres)
    ended = []

    def end_the_second_session(**_):  # the one that last sent a key's lookup (the table's own sends none now)
        query = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'SELECT (EXISTS (SELECT 1 FROM %%' AND pid <> %s AND datname = current_database()"
        )
        ended.extend(observer.query(query, args=(backend_pid(Trial.connection),)).fetchall())

    with dj_staged.staged_insert(Trial) as batch:
        stage_row(batch, 0, np.zeros(2))
        with steps.observe("writer.write", end_the_second_session):  # the lookup of key 3 is on its way
            with pytest.raises(dj.errors.DuplicateError, match="'trial': 3} is already in"):
                stage_row(batch, 3, np.ones(2))
        stage_row(batch, 4, np.ones(2))
    assert len(ended) == 1
    assert sorted(Trial.to_arrays("trial").tolist()) == [0, 3, 4] and kinds(djstaged_local_store)["_schema/"] == 2
    observer.close()


def test_inside_a_transaction_a_key_is_looked_up_on_its_connection_before_the_first_byte(Trial, djstaged_local_store):
    reached = []
    with Trial.connection.transaction:
        Trial.insert1({"session_id": 1, "trial": 3})  # not committed: only this session sees it
        with dj_staged.staged_insert(Trial) as batch:
            stage_row(batch, 0, np.zeros(2))
            with pytest.raises(dj.errors.DuplicateError, match="already in"), batch.row() as staged:
                staged.rec.update(session_id=1, trial=3)
                staged.open("signal", ".npy")
                reached.append("after open")
            stage_row(batch, 1, np.ones(2))
    assert reached == [] and sorted(Trial.to_arrays("trial").tolist()) == [0, 1, 3]


def test_a_value_datajoint_cannot_encode_fails_its_row_first_and_the_batch_after(djstaged_schema, djstaged_local_store):
    """DataJoint builds the INSERT of the first row of a batch with each set of columns at the row's exit, so a value
    it cannot encode refuses that row; a later row with the same columns is not built again (most of a small row's
    own cost), and such a value there fails the final INSERT: the whole batch unwinds, as with insert(list)."""
    Tagged = declare(djstaged_schema, "Tagged", "k : int32\n---\ninfo : json\nsignal : <npy@main>\n")

    def tagged_row(batch, k, info):
        with batch.row() as staged:
            staged.rec.update(k=k, info=info)
            with staged.open("signal", ".npy") as f:
                np.save(f, np.full(3, k), allow_pickle=False)

    unencodable, accepted = {"when": object()}, []
    with dj_staged.staged_insert(Tagged) as batch:
        with pytest.raises(TypeError, match="not JSON serializable"):
            tagged_row(batch, 1, unencodable)  # the first row with these columns: refused at its exit
        tagged_row(batch, 2, {"when": "now"})
    assert Tagged.to_arrays("k").tolist() == [2]
    with pytest.raises(TypeError, match="not JSON serializable"), dj_staged.staged_insert(Tagged) as batch:
        tagged_row(batch, 3, {"when": "later"})
        tagged_row(batch, 4, unencodable)  # the same columns as row 3: left to the final INSERT
        accepted.append(4)
    assert accepted == [4] and Tagged.to_arrays("k").tolist() == [2]
    assert len(store_files(djstaged_local_store)) == 1 and lease_files(djstaged_local_store) == []
