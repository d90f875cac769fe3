"""A resumable write against the collector, step by step (issue #27): every interleaving of ``writer.checkpoint``
and ``writer.takeover`` with the collector's steps, ordered by named steps (never by sleeps).

A party is held at a step (:class:`support.races.Hold`, :class:`support.races.Pause`) while the other runs; the
write is then interrupted (``KeyboardInterrupt``), resumed and committed, and its row compared with a plain
staged insert of the same bytes. The resume must go on from the durable prefix the earlier attempt recorded:
a collector whose window has not passed deletes nothing of it, and one whose window has passed may take only
what no live lease names.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from support import resuming
from support.database import wait_for_lock_waiter
from support.races import Hold, Party, Pause
from support.resumed import check_identical, incomplete_uploads, stored_value
from support.resuming import Durable
from support.stores import lease_files, store_files
from support.tables import declare

import dj_staged
import dj_staged.gc
from dj_staged import steps
from dj_staged.errors import ResumeRestartedWarning
from dj_staged.gc.policy import RESUMABLE
from dj_staged.steps import COLLECTOR_STEPS

UNIT = 64 << 10  # DJ_STAGED_PART_SIZE here: a local store's durable unit
S3_UNIT = 5 << 20  # S3's smallest part, to which a smaller DJ_STAGED_PART_SIZE is raised
LATER = 2 * 86400.0  # a collector's clock two days ahead: every write past its grace period and resume window
GCS_UNIT = 256 << 10  # a GCS resumable upload's chunk is a multiple of 256 KiB
STORES = {
    "local": "djstaged_local_store",
    "s3": "djstaged_s3_store",
    "gcs": "djstaged_gcs_store",
    "azure": "djstaged_azure_store",
}
CODECS = ["object", "hash"]  # a file codec and a hash-addressed one


@pytest.fixture(autouse=True)
def small_units(monkeypatch):
    monkeypatch.setenv("DJ_STAGED_PART_SIZE", str(UNIT))
    # fake-gcs-server completes an upload session asked for its offset: trust the checkpoint there
    monkeypatch.setenv("DJ_STAGED_GCS_SESSION_QUERY", "0")


@pytest.fixture(params=list(STORES))
def resumable_store(request):
    """Every store: the local store ``main``, the S3 store ``s3`` (moto), the GCS store ``gcs``
    (fake-gcs-server) and the Azure store ``azure`` (Azurite)."""
    return request.getfixturevalue(STORES[request.param])


@pytest.fixture(params=[name for name in STORES if name != "gcs"])
def store_asked_its_prefix(request):
    """Every store whose emulator can be asked what it holds: not fake-gcs-server, which completes a session asked
    for its offset (so these tests do not ask it), and so cannot show a lost session."""
    return request.getfixturevalue(STORES[request.param])


def unit_of(store) -> int:
    return {"s3": S3_UNIT, "gcs": GCS_UNIT}.get(store.spec["protocol"], UNIT)


def setting(schema, store, codec: str) -> tuple[Any, bytes, int]:
    """Table ``Resumed(k -> v)`` of ``codec`` in ``store``, two and a half durable units of data, the unit."""
    table = declare(schema, "Resumed", f"k : int32\n---\nv : <{codec}@{store.name}>")
    unit = unit_of(store)
    return table, np.random.default_rng(27).bytes(2 * unit + unit // 2), unit


def offset_of(doc: dict) -> int:
    """The stored offset a checkpoint records durable."""
    return int((doc.get("checkpoint") or {}).get("offset") or 0)


def at_offset(offset: int) -> Callable[..., bool]:
    """A :class:`Hold` condition: the checkpoint recording ``offset``."""
    return lambda **context: offset_of(context["doc"]) == offset


class Restarts(list):
    """Hears ``writer.checkpoint`` and keeps why each field started over (a restart is recorded as a checkpoint);
    a warning raised in a thread is no evidence here, since DataJoint's queries in other threads enter and leave
    ``warnings.catch_warnings`` concurrently."""

    def __call__(self, **context: Any) -> None:
        if "restarted" in context["doc"]:
            self.append(context["doc"]["restarted"])


def collect(schema, store, **options) -> Any:
    return dj_staged.gc.collect(schema, store=store.name, dry_run=False, grace=0, **options)


def past_the_window(schema, store) -> Any:
    """A collection with grace 0, resume window 0 and a clock two days ahead: it keeps only what a live lease
    names or a row references."""
    return collect(schema, store, resume_window=0, now=time.time() + LATER)


def deleted_outside_leases(report) -> list[str]:
    """What a collection deleted besides lease records (a dead lease's record is its to take)."""
    assert report.errors == []
    return sorted(p for s in report.sections if s.section != "leases" for p in s.paths) if report.deleted else []


def write_upto(
    table,
    data: bytes,
    upto: int,
    durable: Durable,
    *,
    interrupt: bool = True,
    began: list[int] | None = None,
    holding: threading.Event | None = None,
    go_on: threading.Event | None = None,
) -> int:
    """Stage row ``k = 1`` with ``resume=True`` from where the handle begins (appended to ``began``) to
    ``data[:upto]``; wait until the last durable unit reached is recorded, then raise ``KeyboardInterrupt``
    (``interrupt``) or write the rest and commit. With ``holding`` and ``go_on``: once one more unit is recorded
    durable, set ``holding`` and wait for ``go_on`` before writing on. Returns where the handle began."""
    with dj_staged.staged_insert1(table, resume=True) as staged:
        staged.rec["k"] = resuming.KEY
        with staged.open("v", ".bin") as f:
            start = f.tell()
            if began is not None:
                began.append(start)
            written = start
            if holding is not None and go_on is not None:
                written = start + f.unit + 10
                f.write(data[start:written])
                assert durable.wait_for(start + f.unit)
                holding.set()
                assert go_on.wait(120)
            f.write(data[written:upto])
            if interrupt:
                assert durable.wait_for(upto - upto % f.unit)
                raise KeyboardInterrupt
    return start


def resume(table, data: bytes) -> int:
    """Resume row ``k = 1`` with no restart allowed, write the rest, commit; where the handle began."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeRestartedWarning)
        return write_upto(table, data, len(data), Durable(), interrupt=False)


def interrupted_at(table, data: bytes, upto: int) -> int:
    """A first attempt, in this thread, interrupted once ``data[:upto]`` is written; its durable offset."""
    durable = Durable()
    with steps.observe("writer.checkpoint", durable), pytest.raises(KeyboardInterrupt):
        write_upto(table, data, upto, durable)
    return durable.offset


# ---- the writer held at writer.checkpoint, a collection past every window run then


@pytest.mark.parametrize("codec", CODECS)
def test_a_collection_at_each_checkpoint_takes_nothing_of_the_prefix(
    codec, djstaged_schema, resumable_store, elsewhere
):
    """Three attempts; a collection with grace 0 past every resume window while a writer is held at each
    checkpoint: the first attempt's first unit, the checkpoint the second attempt's takeover records again in its
    own lease, the second attempt's next unit. None deletes anything but the records of dead leases; the third
    attempt goes on from the second's durable prefix, and its row is the plain row."""
    table, data, unit = setting(djstaged_schema, resumable_store, codec)
    # (where the attempt begins, what it has written when interrupted, the checkpoints it is held at)
    phases = [(0, unit + 10, [unit]), (unit, 2 * unit + 10, [unit, 2 * unit])]
    leases = []
    for start, upto, held_at in phases:
        durable = Durable()
        holds = [Hold(at_offset(offset)) for offset in held_at]
        began: list[int] = []
        with contextlib.ExitStack() as stack:
            for observer in [durable, *holds]:
                stack.enter_context(steps.observe("writer.checkpoint", observer))
            writer = Party("writer", write_upto, table, data, upto, durable, began=began)
            writer.start()
            for hold in holds:
                hold.wait()
                files, uploads = store_files(resumable_store), incomplete_uploads(resumable_store)
                assert deleted_outside_leases(past_the_window(elsewhere, resumable_store)) == []
                assert (store_files(resumable_store), incomplete_uploads(resumable_store)) == (files, uploads)
                hold.go()
            with pytest.raises(KeyboardInterrupt):
                writer.outcome(120)
        leases.append(holds[0].context["lease"])
        assert began == [start]
        assert durable.offset == upto - upto % unit
        assert lease_files(resumable_store) != []
    assert leases[0] != leases[1]  # the takeover's checkpoint is recorded in the resumer's own lease
    assert resume(table, data) == 2 * unit
    check_identical(table, codec, data, resumable_store)


# ---- the collector held at each of its steps while a writer records a checkpoint, or a resumer takes over


@pytest.mark.parametrize("step", COLLECTOR_STEPS)
@pytest.mark.parametrize("codec", CODECS)
def test_a_checkpoint_and_an_interruption_while_the_collector_is_held(
    step, codec, djstaged_schema, resumable_store, elsewhere
):
    """A live first attempt has one unit durable; a collection (grace 0, the resume window open) is held at
    ``step``; the attempt records its next checkpoint and is interrupted; the collection then ends. It deleted
    nothing, and the resume goes on from the second unit."""
    table, data, unit = setting(djstaged_schema, resumable_store, codec)
    durable, holding, go_on = Durable(), threading.Event(), threading.Event()
    pause = Pause("collector")
    with steps.observe("writer.checkpoint", durable), steps.observe(step, pause):
        writer = Party("writer", write_upto, table, data, 2 * unit + 10, durable, holding=holding, go_on=go_on)
        writer.start()
        assert holding.wait(120)  # its lease names the object, one unit durable
        collector = Party("collector", collect, elsewhere, resumable_store, resume_window=3600)
        collector.start()
        pause.wait()
        go_on.set()
        with pytest.raises(KeyboardInterrupt):
            writer.outcome(120)  # a checkpoint recorded and the write suspended while the collector is held
        assert durable.offset == 2 * unit
        pause.go()
        report = collector.outcome(120)
    assert report.errors == [] and report.deleted == 0
    assert resume(table, data) == 2 * unit
    check_identical(table, codec, data, resumable_store)


@pytest.mark.parametrize("step", COLLECTOR_STEPS)
@pytest.mark.parametrize("codec", CODECS)
def test_a_takeover_while_the_collector_is_held(step, codec, djstaged_schema, resumable_store, elsewhere):
    """A first attempt interrupted with one unit durable; a collection (grace 0, the resume window open) is held
    at ``step`` while a resumer starts: before the gate (``collector.list``) the resumer takes over, writes and
    commits; once the collection holds the gate the resumer waits for it to lease what it takes over. Either way
    the collection deletes nothing of the prefix and the resumer goes on from the first unit."""
    table, data, unit = setting(djstaged_schema, resumable_store, codec)
    assert interrupted_at(table, data, unit + 10) == unit
    pause, restarts = Pause("collector"), Restarts()
    with steps.observe(step, pause), steps.observe("writer.checkpoint", restarts):
        collector = Party("collector", collect, elsewhere, resumable_store, resume_window=3600)
        collector.start()
        pause.wait()
        resumer = Party("resumer", write_upto, table, data, len(data), Durable(), interrupt=False)
        resumer.start()
        if step == "collector.list":  # no gate held yet: the resumer takes over and commits
            assert resumer.outcome(120) == unit
        else:
            wait_for_lock_waiter(elsewhere.connection)  # the resumer waits for the gate
        pause.go()
        report = collector.outcome(120)
        assert resumer.outcome(120) == unit
    assert restarts == []
    assert report.errors == []
    assert not [p for p in report.paths if p.startswith(stored_value(table, 1)["path"])]
    if step != "collector.list":
        assert report.deleted == 0
        assert kept_for_resumption(report) != []  # the earlier attempt, read before the takeover
    check_identical(table, codec, data, resumable_store)


def kept_for_resumption(report) -> list[str]:
    return sorted(root for s in report.sections for root, why in s.protected.items() if why == RESUMABLE)


@pytest.mark.parametrize("codec", CODECS)
def test_a_takeover_waiting_for_a_collection_past_the_window_starts_over(
    codec, djstaged_schema, store_asked_its_prefix, elsewhere
):
    """A collection past the resume window holds the gate, the earlier attempt's lease read as dead; the resumer
    found that lease before and waits for the gate to lease its paths. The collection reclaims them; the resumer
    then finds its prefix gone and starts over from byte 0 (recording why, and warning): never a wrong prefix
    stitched on. Not on GCS, whose emulator cannot be asked whether a session is gone (see above)."""
    resumable_store = store_asked_its_prefix
    table, data, unit = setting(djstaged_schema, resumable_store, codec)
    assert interrupted_at(table, data, unit + 10) == unit
    pause, restarts = Pause("collector"), Restarts()
    with steps.observe("collector.read_leases", pause), steps.observe("writer.checkpoint", restarts):
        collector = Party("collector", past_the_window, elsewhere, resumable_store)
        collector.start()
        pause.wait()
        resumer = Party("resumer", write_upto, table, data, len(data), Durable(), interrupt=False)
        resumer.start()
        wait_for_lock_waiter(elsewhere.connection)  # in its takeover, to lease what it found
        pause.go()
        report = collector.outcome(120)
        assert resumer.outcome(120) == 0
    assert len(restarts) == 1 and "gone" in restarts[0]
    assert deleted_outside_leases(report) != []  # what the earlier attempt left
    check_identical(table, codec, data, resumable_store)
