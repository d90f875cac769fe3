"""A commit whose connection drops while its statement still waits on the server: the writer decides only once
that statement's transaction has ended.

Another session holds the row lock of the same primary key (``BEGIN; INSERT`` and nothing more), so the
writer's commit statement waits on the server; then the writer's connection is cut on the network path (a
proxy on 127.0.0.1, tests/support/pgproxy.py). PostgreSQL does not notice a dead client while a statement
waits, so that statement lives on. The writer reconnects and waits for the lease key that the statement's
transaction holds; the other session then rolls back (the row commits after all) or commits (the writer loses
to it). Every committed row is fetched and its bytes compared.
"""

from __future__ import annotations

import datajoint as dj
import psycopg2
import pytest
from support.database import wait_for_lock_waiter, wait_for_session_end
from support.pgproxy import connect_datajoint_through
from support.races import Party
from support.stores import store_files

import dj_staged
import dj_staged.gc
from dj_staged import steps
from dj_staged.errors import AmbiguousCommitError
from dj_staged.leases import scan_leases
from dj_staged.settings import CLIENT_CHECK, COMMIT_WAIT
from dj_staged.stores import resolve_store

OURS = b"the writer's recording " * 500
THEIRS = b"the other session's recording " * 400
FIELD = {"object": "<object@{store}>", "hash": "<hash@{store}>"}


@pytest.fixture(params=sorted(FIELD))
def kind(request) -> str:
    """The field is schema-addressed (``<object@>``) or hash-addressed (``<hash@>``)."""
    return request.param


@pytest.fixture
def tables(proxy, djstaged_schema, elsewhere, store, kind):
    """The same table twice: through the proxy for the writer, and on a second session for the other party."""
    definition = f"item_id : int32\n---\ncontent : {FIELD[kind].format(store=store.name)}\n"
    connection = connect_datajoint_through(proxy)
    writer = dj.Schema(djstaged_schema.database, connection=connection, create_schema=False)
    ours = writer(type("Item", (dj.Manual,), {"definition": definition}))
    theirs = elsewhere(type("Item", (dj.Manual,), {"definition": definition}))
    yield ours, theirs
    connection.close()


def stage(table) -> None:
    """A staged insert of ``OURS`` under key 1.

    Its ``CommitRecoveredWarning`` is not checked here: warnings filters are process-wide, and DataJoint's
    queries in the test's own thread swap them meanwhile (tests/session/test_ambiguous.py checks it).
    """
    with dj_staged.staged_insert1(table) as staged:
        staged.rec["item_id"] = 1
        with staged.open("content", ".bin") as f:
            f.write(OURS)


def content(table) -> bytes:
    value = (table & {"item_id": 1}).fetch1("content")
    return value if isinstance(value, bytes) else value.read()


def referenced(table) -> set[str]:
    return {value["path"] for (value,) in table.connection.query(f"SELECT content FROM {table.full_table_name}")}


def commit_waits_then_cut(proxy, ours, theirs, djstaged_schema, *, their_row: bool = False) -> Party:
    """When the writer reaches its commit, the other session takes key 1 and holds it; the writer's commit
    statement waits for that row lock; then the writer's connection is cut.

    The other session inserts just the key (``BEGIN; INSERT``), or with ``their_row`` a whole row of its own
    through DataJoint's ``insert1``. Returns the writer, which goes on to resolve its lost commit.
    """

    def take_the_key(**context: object) -> None:
        theirs.connection.start_transaction()
        if their_row:
            theirs.insert1({"item_id": 1, "content": THEIRS})
        else:
            theirs.connection.query(f"INSERT INTO {theirs.full_table_name} (item_id, content) VALUES (1, '{{}}')")

    with steps.observe("writer.commit", take_the_key):
        writer = Party("writer", stage, ours)
        writer.start()
        wait_for_lock_waiter(djstaged_schema.connection, locktype="transactionid")  # the commit waits for the row lock
    assert proxy.kill_connections() >= 1
    return writer


def test_the_other_session_rolls_back_and_the_waiting_commit_stands(proxy, tables, djstaged_schema, store, monkeypatch):
    monkeypatch.setenv(CLIENT_CHECK, "0")  # the server keeps the orphaned statement waiting, as by default
    ours, theirs = tables
    writer = commit_waits_then_cut(proxy, ours, theirs, djstaged_schema)
    wait_for_lock_waiter(djstaged_schema.connection)  # the writer waits for its lease key, held by that transaction
    assert writer.is_alive()
    theirs.connection.cancel_transaction()
    writer.outcome()
    assert content(ours) == OURS
    assert set(store_files(store)) == referenced(ours)  # the row's objects, nothing staged left over
    assert dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False).deleted == 0
    assert content(theirs) == OURS


def test_the_other_session_commits_and_the_writer_gets_a_duplicate_error(
    proxy, tables, djstaged_schema, store, monkeypatch
):
    monkeypatch.setenv(CLIENT_CHECK, "0")
    ours, theirs = tables
    writer = commit_waits_then_cut(proxy, ours, theirs, djstaged_schema, their_row=True)
    wait_for_lock_waiter(djstaged_schema.connection)
    theirs.connection.commit_transaction()
    with pytest.raises(dj.errors.DuplicateError, match="another row with the same primary key"):
        writer.outcome()
    assert content(theirs) == THEIRS
    assert set(store_files(store, leases=True)) == referenced(theirs)  # the writer's objects and lease are gone


def test_past_the_bound_the_outcome_is_ambiguous_and_nothing_is_deleted(
    proxy, tables, djstaged_schema, store, monkeypatch
):
    monkeypatch.setenv(CLIENT_CHECK, "0")
    monkeypatch.setenv(COMMIT_WAIT, "0.2")
    ours, theirs = tables
    writer = commit_waits_then_cut(proxy, ours, theirs, djstaged_schema)
    with pytest.raises(AmbiguousCommitError, match=COMMIT_WAIT) as raised:
        writer.outcome()
    assert raised.value.keys == [{"item_id": 1}]
    kept = set(store_files(store))
    (lease,) = scan_leases(resolve_store(store.name, dj.config), djstaged_schema.database)
    theirs.connection.cancel_transaction()  # the orphaned statement goes on, and commits
    wait_for_session_end(djstaged_schema.connection, lease.db_pid)
    assert content(theirs) == OURS  # the row the writer could not confirm has every object it references
    assert referenced(theirs) <= kept
    report = dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False)
    assert sum(s.deleted for s in report.sections if s.section != "leases") == 0
    assert set(store_files(store, leases=True)) == referenced(theirs)


def test_the_server_aborts_a_statement_whose_client_is_gone(proxy, tables, djstaged_schema, store, monkeypatch):
    """With ``client_connection_check_interval`` set on the writer's session, the server ends the orphaned
    statement by itself; the writer finds its row absent, unwinds, and the other row is untouched."""
    monkeypatch.setenv(CLIENT_CHECK, "0.1")
    ours, theirs = tables
    writer = commit_waits_then_cut(proxy, ours, theirs, djstaged_schema, their_row=True)
    with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError, dj.errors.LostConnectionError)):
        writer.outcome()
    theirs.connection.commit_transaction()
    assert content(theirs) == THEIRS
    assert set(store_files(store, leases=True)) == referenced(theirs)
