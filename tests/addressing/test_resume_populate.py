"""``staged_insert1(self, resume=True)`` in a ``make()`` (issue #27): a ``populate()`` interrupted mid-write keeps
the durable prefix, and the next ``populate()`` goes on from it to the row one uninterrupted write stores.

DataJoint runs each ``make()`` in a transaction, which it cancels when ``make()`` raises (``KeyboardInterrupt``
included): the resumable write must survive that rollback. The first ``populate()`` is interrupted in this
process (``KeyboardInterrupt`` once two durable units are recorded) or in a child killed with SIGKILL there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import datajoint as dj
import numpy as np
import pytest
from support import resuming
from support.child import ChildDied, PausableChild
from support.paths import TEST_PYTHONPATH
from support.resumed import check_identical, wait_for_the_killed_session
from support.resuming import Durable
from support.stores import lease_files
from support.tables import declare

import dj_staged
from dj_staged import steps
from dj_staged.errors import ResumeRestartedWarning

UNIT = 64 << 10  # DJ_STAGED_PART_SIZE here: a local store's durable unit
S3_UNIT = 5 << 20  # S3's smallest part
STORES = {"local": "djstaged_local_store", "s3": "djstaged_s3_store"}
SOURCE = "k : int32"


@pytest.fixture(autouse=True)
def small_units(monkeypatch):
    monkeypatch.setenv("DJ_STAGED_PART_SIZE", str(UNIT))
    monkeypatch.setenv("PYTHONPATH", ":".join(TEST_PYTHONPATH))  # the child imports support/resuming.py


@pytest.fixture(params=list(STORES))
def resumable_store(request):
    """The local store ``main`` and the S3 store ``s3`` (moto)."""
    return request.getfixturevalue(STORES[request.param])


def unit_of(store) -> int:
    return S3_UNIT if store.spec["protocol"] == "s3" else UNIT


def derived_definition(codec: str, store) -> str:
    return f"-> Source\n---\nv : <{codec}@{store.name}>"


class Recorder:
    """What the ``make()`` below reads and records: the data, where each handle began, the checkpoints."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.began: list[int] = []
        self.durable = Durable()


def resumable_make(self, key: dict, stop_at: int | None = None) -> None:
    """A ``make()`` writing its row's ``v`` from where the handle begins; with ``stop_at``, interrupted
    (``KeyboardInterrupt``) once ``data[:stop_at]`` is written and its last durable unit recorded."""
    recorder: Recorder = type(self).recorder
    data = recorder.data
    with dj_staged.staged_insert1(self, resume=True) as staged:
        staged.rec.update(key)
        with staged.open("v", ".bin") as f:
            began = f.tell()
            recorder.began.append(began)
            f.write(data[began : len(data) if stop_at is None else stop_at])
            if stop_at is not None:
                assert recorder.durable.wait_for(stop_at - stop_at % f.unit)
                raise KeyboardInterrupt


def pipeline(schema, store, codec: str, data: bytes) -> tuple[Any, Any]:
    """``Source(k)`` with rows 1 and 2, and ``Derived(-> Source, v)`` whose ``make()`` resumes."""
    Source = declare(schema, "Source", SOURCE)  # noqa: N806 - the name the definition's "-> Source" resolves
    Source.insert([{"k": 1}, {"k": 2}])
    body = {"definition": derived_definition(codec, store), "make": resumable_make, "recorder": Recorder(data)}
    return Source, schema(type("Derived", (dj.Computed,), body))


def populate_again(table, reserve_jobs: bool) -> dict:
    """The next ``populate()``, with no restart allowed."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeRestartedWarning)
        return table.populate({"k": 1}, reserve_jobs=reserve_jobs)


@pytest.mark.parametrize("reserve_jobs", [False, True])
@pytest.mark.parametrize("codec", ["object", "hash"])
def test_an_interrupted_populate_resumes_in_the_next(codec, reserve_jobs, djstaged_schema, resumable_store):
    """``KeyboardInterrupt`` in ``make()`` with two units durable: DataJoint cancels the transaction and re-raises;
    the next ``populate()`` (after releasing the job it left in ``error``) goes on from the second unit."""
    unit = unit_of(resumable_store)
    data = np.random.default_rng(27).bytes(3 * unit + unit // 2)
    _, derived = pipeline(djstaged_schema, resumable_store, codec, data)
    recorder: Recorder = derived.recorder
    with steps.observe("writer.checkpoint", recorder.durable), pytest.raises(KeyboardInterrupt):
        derived.populate({"k": 1}, reserve_jobs=reserve_jobs, make_kwargs={"stop_at": 2 * unit + 10})
    assert len(derived()) == 0
    assert lease_files(resumable_store) != []  # the rollback of make()'s transaction kept the durable prefix
    if reserve_jobs:  # the job waits in "error" (KeyboardInterrupt) until released
        assert populate_again(derived, reserve_jobs)["success_count"] == 0
        (derived.jobs.errors & [{"k": 1}]).delete()
    assert populate_again(derived, reserve_jobs)["success_count"] == 1
    assert recorder.began == [0, 2 * unit]
    check_identical(derived, codec, data, resumable_store, allow_direct_insert=True)


@pytest.mark.parametrize("reserve_jobs", [False, True])
@pytest.mark.parametrize("codec", ["object", "hash"])
def test_a_populate_killed_mid_write_resumes_in_the_next(
    codec, reserve_jobs, djstaged_postgres, djstaged_schema, resumable_store
):
    """A worker killed (SIGKILL) in ``make()`` with two units durable: the next ``populate()`` here (after
    releasing the job it left ``reserved``) goes on from the second unit."""
    unit = unit_of(resumable_store)
    data = np.random.default_rng(27).bytes(3 * unit + unit // 2)
    _, derived = pipeline(djstaged_schema, resumable_store, codec, data)
    worker = PausableChild(
        resuming.killed_populate,
        dataclasses.asdict(djstaged_postgres),
        dict(dj.config.stores),
        djstaged_schema.database,
        SOURCE,
        derived_definition(codec, resumable_store),
        data,
        2 * unit + 10,
        reserve_jobs,
    )
    with worker, pytest.raises(ChildDied) as died:
        worker.join(timeout=120)
    assert died.value.exitcode == -9
    assert len(derived()) == 0
    wait_for_the_killed_session(derived)
    if reserve_jobs:  # the killed worker's job stays "reserved" until released
        assert populate_again(derived, reserve_jobs)["success_count"] == 0
        (derived.jobs.reserved & [{"k": 1}]).delete()
    assert populate_again(derived, reserve_jobs)["success_count"] == 1
    assert derived.recorder.began == [2 * unit]
    check_identical(derived, codec, data, resumable_store, allow_direct_insert=True)
