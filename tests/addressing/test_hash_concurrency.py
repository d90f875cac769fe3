"""Hash-addressed staged inserts from several processes against the real server and store."""

from __future__ import annotations

import multiprocessing
import os

import datajoint as dj
import pytest
from support import workers
from support.stores import store_files


@pytest.fixture
def Shared(djstaged_schema, djstaged_local_store, djstaged_connection):
    return workers.table(djstaged_schema.database, djstaged_connection)


@pytest.fixture
def run(djstaged_postgres, djstaged_local_store, djstaged_schema):
    db = {
        "host": djstaged_postgres.host,
        "port": djstaged_postgres.port,
        "user": djstaged_postgres.user,
        "password": "",
    }
    stores = dict(dj.config.stores)
    context = multiprocessing.get_context("spawn")

    def run_all(jobs):
        manager = context.Manager()
        barrier = manager.Barrier(len(jobs))
        with context.Pool(len(jobs)) as pool:
            pending = [
                pool.apply_async(fn, (db, stores, djstaged_schema.database, key, data, barrier))
                for fn, key, data in jobs
            ]
            results = [p.get(timeout=120) for p in pending]
        manager.shutdown()
        return results

    return run_all


def column_path(table) -> str:
    """The ``path`` in the one row's ``v`` column, as stored."""
    (value,) = table.connection.query(f"SELECT v FROM {table.full_table_name}").fetchone()
    return value["path"]


def hash_files(store) -> list[str]:
    return [p for p in store_files(store) if p.startswith("_hash/")]


def test_same_content_different_keys_at_once(Shared, run, djstaged_local_store):
    data = os.urandom(2_000_000)
    assert run([(workers.stage, key, data) for key in (1, 2, 3)]) == ["ok"] * 3
    rows = Shared.to_dicts()
    assert sorted(r["k"] for r in rows) == [1, 2, 3] and all(r["v"] == data for r in rows)
    paths = {p for (p,) in Shared.connection.query(f"SELECT v->>'path' FROM {Shared.full_table_name}").fetchall()}
    assert len(paths) == 1 and hash_files(djstaged_local_store) == sorted(paths)
    assert [p for p in store_files(djstaged_local_store) if p.startswith("_staging/")] == []


def test_same_key_from_two_processes(Shared, run, djstaged_local_store):
    first, second = os.urandom(500_000), os.urandom(500_000)
    results = run([(workers.stage, 1, first), (workers.stage, 1, second)])
    assert sorted(results) == ["DuplicateError", "ok"]
    value = (Shared & "k=1").fetch1("v")
    assert value in (first, second)
    assert [p for p in store_files(djstaged_local_store) if p.startswith("_staging/")] == []
    # the loser is refused before it promotes (the key is taken), or its promoted object is reclaimed on unwind
    assert hash_files(djstaged_local_store) == [column_path(Shared)]


def test_staged_while_ordinary_insert_of_same_content(Shared, run, djstaged_local_store):
    data = os.urandom(1_000_000)
    assert run([(workers.stage, 1, data), (workers.insert, 2, data)]) == ["ok", "ok"]
    assert [r["v"] == data for r in Shared.to_dicts()] == [True, True]
    assert len(hash_files(djstaged_local_store)) == 1
