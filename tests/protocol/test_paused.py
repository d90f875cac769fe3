"""A writer process stopped (real SIGSTOP) for any length of time keeps its lease; a collector leaves it alone.

The collector runs with its clock days ahead of the writer's (``now=``), as
after a long pause or on a machine whose clock is off: liveness is the lease
lock on the writer's database session, and no clock takes part in it.
"""

from __future__ import annotations

import dataclasses
import os
import time

import datajoint as dj
import pytest
from support import workers
from support.child import PausableChild

import dj_staged.gc
from dj_staged.gc.policy import LEASED

DAYS_LATER = 10 * 86400.0


@pytest.fixture
def database(djstaged_postgres) -> dict:
    return dataclasses.asdict(djstaged_postgres)


def test_a_writer_stopped_mid_write_keeps_every_part(djstaged_schema, store, database):
    Table = djstaged_schema(
        type("Paused", (dj.Manual,), {"definition": f"k : int32\n---\nraw : <object@{store.name}>"})
    )
    stores = dict(dj.config.stores)
    with PausableChild(workers.paused_writer, database, stores, djstaged_schema.database, 10, store.name) as writer:
        writer.wait_paused("midway")  # five parts written, the process stopped
        report = dj_staged.gc.collect(
            djstaged_schema, store=store.name, grace=0, dry_run=False, now=time.time() + DAYS_LATER
        )
        assert report.deleted == 0 and list(report.section("schema").protected.values()) == [LEASED]
        writer.resume()
        assert writer.join() == [f"part{i:03d}" for i in range(10)]
    fsmap = Table.fetch1("raw").fsmap
    assert {key: fsmap[key] for key in fsmap} == {f"part{i:03d}": workers.part(i) for i in range(10)}


def test_a_writer_stopped_after_it_deduplicated_keeps_its_target(djstaged_schema, store, database):
    Content = djstaged_schema(type("Content", (dj.Manual,), {"definition": f"k : int32\n---\nv : <hash@{store.name}>"}))
    data = os.urandom(40_000)
    Content.insert1({"k": 1, "v": data})
    (value,) = Content.connection.query(f"SELECT v FROM {Content.full_table_name}").fetchone()
    (Content & {"k": 1}).delete()  # an orphan now, older than any grace by the collector's clock below
    stores = dict(dj.config.stores)
    with PausableChild(workers.dedup_writer, database, stores, djstaged_schema.database, data, store.name) as writer:
        writer.wait_paused("dedup")
        report = dj_staged.gc.collect(djstaged_schema, store=store.name, dry_run=False, now=time.time() + DAYS_LATER)
        assert report.section("hash").protected == {value["path"]: LEASED} and report.deleted == 0
        writer.resume()
        assert writer.join() == "ok"
    assert Content.fetch1("v") == data
