"""A table's own ``insert1`` (or ``insert``, for a batch) runs for staged rows, as DataJoint's own staged insert
sends its row through ``table.insert1``: inside the commit's transaction, under the lease's guard, with the staged
fields' column values as DataJoint's ``insert1`` stores them."""

from __future__ import annotations

import datajoint as dj
import numpy as np
import pytest
from support.stores import store_files

import dj_staged

DEFINITION = """
item_id : int32
---
note = "" : varchar(64)
trace : <npy@main>
blob : <blob@main>
raw : <object@main>
"""
TRACE = np.arange(12.0)


def write(staged, key: int, note: str = "") -> None:
    staged.rec.update(item_id=key, note=note)
    with staged.open("trace", ".npy") as f:
        np.save(f, TRACE + key)
    with staged.open("blob", ".bin") as f:
        f.write(b"blob bytes %d" % key)
    with staged.open("raw", ".bin") as f:
        f.write(b"raw bytes %d" % key)


def stage(table, key: int, note: str = "") -> None:
    with dj_staged.staged_insert1(table) as staged:
        write(staged, key, note)


def check(table, key: int) -> None:
    row = (table & {"item_id": key}).fetch1()
    np.testing.assert_array_equal(row["trace"].load(), TRACE + key)
    assert row["blob"] == b"blob bytes %d" % key and row["raw"].read() == b"raw bytes %d" % key


def test_an_insert1_that_validates_refuses_and_the_block_unwinds(djstaged_schema, djstaged_local_store):
    calls = []

    class Validated(dj.Manual):
        definition = DEFINITION

        def insert1(self, row, **kwargs):
            calls.append(self.connection.in_transaction)
            if row["note"] == "bad":
                raise ValueError("a note must not be 'bad'")
            super().insert1(row, **kwargs)

    table = djstaged_schema(Validated)
    with pytest.raises(ValueError, match="must not be 'bad'"):
        stage(table, 1, note="bad")
    assert len(table()) == 0 and store_files(djstaged_local_store, leases=True) == []
    stage(table, 2, note="good")
    check(table, 2)
    assert calls == [True, True]  # inside the commit's transaction, both times


def test_an_insert1_that_fills_a_column(djstaged_schema, djstaged_local_store):
    class Filled(dj.Manual):
        definition = DEFINITION

        def insert1(self, row, **kwargs):
            super().insert1({**row, "note": f"filled for {row['item_id']}"}, **kwargs)

    table = djstaged_schema(Filled)
    stage(table, 3)
    check(table, 3)  # the staged values went in as they were finalized, not encoded a second time
    assert (table & {"item_id": 3}).fetch1("note") == "filled for 3"


def test_an_insert1_replaced_on_the_instance_sees_the_row(djstaged_schema, djstaged_local_store):
    """As DataJoint's own test of its staged insert does: replace ``insert1`` on the table object to capture the
    row. The <object@> value it receives has insert1's shape."""
    table = djstaged_schema(
        type("Captured", (dj.Manual,), {"definition": "item_id : int32\n---\nraw : <object@main>"})
    )()
    captured, original = [], table.insert1
    table.insert1 = lambda row, **kwargs: (captured.append(dict(row)), original(row, **kwargs))
    with dj_staged.staged_insert1(table) as staged:
        staged.rec["item_id"] = 1
        with staged.open("raw", ".bin") as f:
            f.write(b"captured")
    (row,) = captured
    assert sorted(row["raw"]) == ["ext", "is_dir", "item_count", "path", "size", "store", "timestamp"]
    assert (table & {"item_id": 1}).fetch1("raw").read() == b"captured"


def test_a_batch_goes_through_the_tables_own_insert(djstaged_schema, djstaged_local_store):
    seen = []

    class Counted(dj.Manual):
        definition = DEFINITION

        def insert(self, rows, **kwargs):
            rows = list(rows)
            seen.append(sorted(row["item_id"] for row in rows))
            super().insert(rows, **kwargs)

    table = djstaged_schema(Counted)
    with dj_staged.staged_insert(table) as batch:
        for key in (4, 5, 6):
            with batch.row() as staged:
                write(staged, key)
    assert seen == [[4, 5, 6]]
    for key in (4, 5, 6):
        check(table, key)


def test_a_table_without_its_own_insert_commits_in_one_statement(djstaged_schema, djstaged_local_store):
    """The one-statement commit (the guard and the INSERT, sent once) stays for a plain table."""
    from dj_staged._datajoint import own_insert

    table = djstaged_schema(type("Plain", (dj.Manual,), {"definition": DEFINITION}))()
    assert not own_insert(table, batch=False) and not own_insert(table, batch=True)
    statements = []
    with dj_staged.steps.observe("writer.commit", lambda **context: statements.append(context["deferred"])):
        stage(table, 7)
    assert statements == [False]
    check(table, 7)
