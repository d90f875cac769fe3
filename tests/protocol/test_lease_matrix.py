"""Every way a block can end early, at every step of the writer's protocol, on every store.

A reviewer's table of the protocol: for each step that :mod:`dj_staged.steps` names for a writer, and each
of four faults (an exception, ``KeyboardInterrupt``, the database connection cut on the network path, the
process SIGKILLed), a block is stopped at that step's first occurrence. Then:

- no dj-staged advisory lock is left: not on the writer's session, not on any other (``pg_locks``);
- the next ``dj-staged gc --delete --grace 0`` leaves nothing of the write: the store holds exactly the
  objects that committed rows reference, no staging object, no lease, no incomplete upload;
- no committed row is touched: each committed row fetches byte for byte; the block's own row is committed
  exactly when it was stopped after its commit (``writer.resolve``, ``writer.release``).

The row has a Zarr directory (``<object@>`` through ``store()``), a hash-addressed value with new content
(promoted), one with content an earlier row holds (deduplicated), and a file placed at a path the writer chose
(``<filepath@>``), so every step is reached once. The store also holds nothing at a chosen path without its row.
The writer's connection goes through a proxy on 127.0.0.1 (tests/support/pgproxy.py); for
``writer.resolve`` the proxy loses the reply to the commit, the only way that step is reached.
"""

from __future__ import annotations

import contextlib
import time

import datajoint as dj
import numpy as np
import pytest
import zarr
from support import workers
from support.child import ChildDied, PausableChild
from support.database import advisory_locks
from support.paths import TEST_PYTHONPATH
from support.pgproxy import connect_datajoint_through
from support.workers import FRAMES, SHARED, fresh, write_row

import dj_staged
import dj_staged.gc
from dj_staged import steps
from dj_staged.errors import AmbiguousCommitError, CommitRecoveredWarning
from dj_staged.leases.locks import COMMIT_GUARD_TAG
from dj_staged.steps import WRITER_STEPS
from dj_staged.stores import resolve_store

DEFINITION = """
item_id : int32
---
frames : <object@{store}>
fresh : <hash@{store}>
shared : <hash@{store}>
placed : <filepath@{store}>
"""
FAULTS = ("exception", "interrupt", "cut", "kill")
AFTER_COMMIT = ("writer.resolve", "writer.release")  # the row is committed by then


def check_row(table, key: int) -> None:
    row = (table & {"item_id": key}).fetch1()
    np.testing.assert_array_equal(zarr.open(row["frames"].fsmap, mode="r")[:], FRAMES + key)
    assert row["fresh"] == fresh(key)
    assert row["shared"] == SHARED
    assert row["placed"].read() == fresh(key)[::-1]


class Fault:
    """Stops the block at the first occurrence of ``step``, in this thread, by ``how``."""

    def __init__(self, step: str, how: str, proxy) -> None:
        self.step, self.how, self.proxy, self.fired = step, how, proxy, False

    def __call__(self, **context: object) -> None:
        if self.fired:
            return
        self.fired = True
        if self.how == "exception":
            raise RuntimeError(f"injected at {self.step}")
        if self.how == "interrupt":
            raise KeyboardInterrupt(self.step)
        cut = self.proxy.kill_connections()
        assert cut >= 1 or self.step == "writer.resolve"  # there, the lost reply may have closed it already


def no_locks_left(connection, *, wait: bool) -> None:
    """No dj-staged advisory lock is held by any session; a session whose client was cut or killed may take
    a moment to end on the server (bounded)."""
    deadline = time.monotonic() + (30 if wait else 0)
    while (held := advisory_locks(connection)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert held == []


def files_under(store) -> set[str]:
    from support.stores import store_files

    return set(store_files(store, leases=True))


def referenced(table) -> set[str]:
    rows = table.connection.query(f"SELECT frames, fresh, shared, placed FROM {table.full_table_name}").fetchall()
    return {value["path"] for row in rows for value in row}


def incomplete_uploads(store) -> list[str]:
    """Uploads begun and never completed (S3 multipart uploads, Azure blobs of uncommitted blocks)."""
    staged = resolve_store(store.name, dj.config)
    return sorted(staged.incomplete_uploads("")) if staged.supports_listing_incomplete_uploads else []


@pytest.fixture
def setting(proxy, djstaged_schema, store):
    """The writer's table through the proxy, the same table on the test's own session, and row 0 committed."""
    definition = DEFINITION.format(store=store.name)
    connection = connect_datajoint_through(proxy)
    through_proxy = dj.Schema(djstaged_schema.database, connection=connection, create_schema=False)
    ours = through_proxy(type("Item", (dj.Manual,), {"definition": definition}))
    table = djstaged_schema(type("Item", (dj.Manual,), {"definition": definition}))
    with dj_staged.staged_insert1(table) as staged:
        write_row(staged, 0)
    yield ours, table, definition
    connection.close()


def run_in_process(ours, step: str, how: str, proxy) -> None:
    fault = Fault(step, how, proxy)
    expected: type[BaseException] | tuple[type[BaseException], ...]
    expected = {"exception": RuntimeError, "interrupt": KeyboardInterrupt}.get(how, Exception)
    if step == "writer.resolve" and how == "exception":
        expected = AmbiguousCommitError  # an error while resolving a doubt keeps everything
    with steps.observe(step, fault):
        if how == "cut" and step in AFTER_COMMIT:  # a cut after the commit changes nothing
            recovered = pytest.warns(CommitRecoveredWarning) if step == "writer.resolve" else contextlib.nullcontext()
            with recovered, dj_staged.staged_insert1(ours) as staged:
                write_row(staged, 1)
        else:
            with pytest.raises(expected):
                with dj_staged.staged_insert1(ours) as staged:
                    write_row(staged, 1)
    assert fault.fired


def run_killed(setting, step: str, proxy, djstaged_postgres, djstaged_schema) -> None:
    _, _, definition = setting
    db = {
        "host": "127.0.0.1",
        "port": proxy.port,
        "user": djstaged_postgres.user,
        "password": djstaged_postgres.password,
    }
    child = PausableChild(
        workers.matrix_writer, db, dict(dj.config.stores), djstaged_schema.database, definition, step, 1
    )
    with child:
        with pytest.raises(ChildDied) as died:
            child.join(timeout=120)
    assert died.value.exitcode == -9


@pytest.mark.parametrize("how", FAULTS)
@pytest.mark.parametrize("step", WRITER_STEPS)
def test_a_block_stopped_at_a_step_leaves_no_lock_and_nothing_for_gc(
    setting, step, how, proxy, store, djstaged_schema, djstaged_postgres, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", ":".join(TEST_PYTHONPATH))  # the child imports support/workers.py
    ours, table, _ = setting
    if step == "writer.resolve":
        proxy.drop_reply_after(COMMIT_GUARD_TAG)  # the commit's reply is lost: the writer must resolve it
    if how == "kill":
        run_killed(setting, step, proxy, djstaged_postgres, djstaged_schema)
    else:
        run_in_process(ours, step, how, proxy)
    no_locks_left(djstaged_schema.connection, wait=how in ("cut", "kill") or step == "writer.resolve")

    report = dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False)
    assert report.errors == []
    references = referenced(table)
    files = files_under(store)
    assert all(any(f == p or f.startswith(p + "/") for p in references) for f in files), sorted(files)
    assert references <= {p for p in references if any(f == p or f.startswith(p + "/") for f in files)}
    assert incomplete_uploads(store) == []
    committed = len(table & {"item_id": 1}) == 1
    assert committed == (step in AFTER_COMMIT)
    check_row(table, 0)
    if committed:
        check_row(table, 1)
