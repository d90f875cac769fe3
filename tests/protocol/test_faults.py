"""Faults where real faults happen: in the store's filesystem, in the database, in the process.

For each: the original exception reaches the caller, no row exists, nothing is
left (or what is left is reclaimed by `dj-staged gc`), and the committed row
written before is untouched.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import datajoint as dj
import numpy as np
import psycopg2
import pytest
from support.database import wait_for_session_end
from support.paths import TEST_PYTHONPATH
from support.stores import lease_files, lease_records, store_files
from support.tables import declare

import dj_staged
import dj_staged.gc
from dj_staged.gc.policy import LEASED as LEASED_REASON
from dj_staged.leases import scan_leases
from dj_staged.stores import resolve_store

LATER = 2 * 86400.0
DEFINITION = """
recording_id : int32
---
waveform : <npy@main>
raw : <object@main>
"""


@pytest.fixture
def Recording(djstaged_schema, dj_faulty_store):
    return declare(djstaged_schema, "Recording", DEFINITION)


@pytest.fixture
def committed(Recording, dj_faulty_store):
    """A row committed before the fault, and the bytes of every object in the store at that point."""
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.arange(5.0))
        fsmap = staged.store("raw", ".zarr")
        fsmap["zarr.json"] = b"{}"
        fsmap["c/0"] = b"committed chunk"
    return snapshot(dj_faulty_store)


def snapshot(store) -> dict[str, bytes]:
    root = Path(store.spec["location"])
    return {path: (root / path).read_bytes() for path in store_files(store, leases=True)}


def assert_untouched(Recording, store, before):
    """No new row, no leftover, no lease, and the committed row reads back as it was written."""
    assert snapshot(store) == before
    assert len(Recording()) == 1 and len(Recording & {"recording_id": 1}) == 1
    row = (Recording & {"recording_id": 1}).fetch1()
    root = Path(store.spec["location"])  # read directly: DataJoint's refs do not resolve plugin-store locations
    np.testing.assert_array_equal(np.load(root / row["waveform"].path), np.arange(5.0))
    assert (root / row["raw"].path / "c" / "0").read_bytes() == b"committed chunk"


def write_raw_file(staged, chunks=5):
    with staged.open("raw", ".bin") as f:
        for i in range(chunks):
            f.write(bytes([i]) * 100)


def write_raw_directory(staged, chunks=5):
    fsmap = staged.store("raw", ".zarr")
    for i in range(chunks):
        fsmap[f"c/{i}"] = bytes([i]) * 100


def write_waveform(staged):
    with staged.open("waveform", ".npy") as f:
        f.write(b"placeholder")  # then rewritten from the start: the header must be read back from the store
        f.seek(0)
        np.save(f, np.ones((10, 10)), allow_pickle=False)


@pytest.mark.parametrize("writer", [write_raw_file, write_raw_directory])
@pytest.mark.parametrize("nth", [1, 3])
def test_store_fails_during_a_write(Recording, dj_faulty_store, committed, writer, nth):
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as raised, dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 2
        write_waveform(staged)
        dj_faulty_store.plan.fail("write", nth=nth, error=disk_full, path="/raw_")
        writer(staged)
    assert raised.value is disk_full and dj_faulty_store.plan.fired
    assert_untouched(Recording, dj_faulty_store, committed)


def test_store_fails_while_np_save_writes(Recording, dj_faulty_store, committed):
    error = dj_faulty_store.plan.fail("write", nth=2, path=".npy")
    with pytest.raises(OSError) as raised, dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 2
        write_raw_file(staged)
        write_waveform(staged)
    assert raised.value is error
    assert_untouched(Recording, dj_faulty_store, committed)


@pytest.mark.parametrize(
    "operation, path, writer",
    [
        ("stat", "/raw_", write_raw_file),  # inspecting what was written: fs.info
        ("list", "/raw_", write_raw_directory),  # listing a directory value: fs.find
        ("read", ".npy", write_raw_file),  # reading the .npy header (written out of order: it must be read back)
    ],
)
def test_store_fails_during_finalize(Recording, dj_faulty_store, committed, operation, path, writer):
    with pytest.raises(OSError) as raised, dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 2
        write_waveform(staged)
        writer(staged)
        error = dj_faulty_store.plan.fail(operation, path=path)  # the next one: during finalization
    assert raised.value is error and dj_faulty_store.plan.fired[0][0] == operation
    assert_untouched(Recording, dj_faulty_store, committed)


def test_cleanup_failure_is_logged_and_the_leftover_reclaimed_by_gc(
    Recording, dj_faulty_store, djstaged_schema, committed, caplog
):
    with pytest.raises(RuntimeError, match="instrument disconnected") as raised:
        with dj_staged.staged_insert1(Recording) as staged:
            staged.rec["recording_id"] = 2
            write_raw_directory(staged)
            leftover = staged.field("raw").state.path
            dj_faulty_store.plan.fail("remove", path="/raw_", times=None)
            raise RuntimeError("instrument disconnected")
    assert type(raised.value) is RuntimeError
    assert "Cleanup of staged field 'raw' failed" in caplog.text
    left = [p for p in store_files(dj_faulty_store) if p not in committed]
    assert left and all(p.startswith(leftover + "/") for p in left)
    assert len(Recording()) == 1
    [lease] = lease_records(dj_faulty_store)  # abandoned, not removed: it names what is left
    assert [path for entry in lease["entries"] for path in entry["paths"]] == [leftover]
    dj_faulty_store.plan.clear()  # the store recovers
    report = dj_staged.gc.collect(
        djstaged_schema, store="main", dry_run=False
    )  # default grace: a dead lease's objects go
    assert report.section("schema").paths == sorted(left)
    assert report.section("leases").deleted == 1  # the lease: one file, its header and its "abandoned" mark
    assert lease_files(dj_faulty_store) == []
    assert_untouched(Recording, dj_faulty_store, committed)


def test_store_refusing_the_lease_stops_the_write_before_it_starts(Recording, dj_faulty_store, committed):
    refused = dj_faulty_store.plan.fail("open", path="_leases", error=OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(OSError) as raised, dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 2
        with staged.open("raw", ".bin") as f:
            f.write(b"never protected, never kept")
    assert raised.value is refused
    assert_untouched(Recording, dj_faulty_store, committed)


def test_lease_removal_failure_does_not_fail_the_insert(Recording, dj_faulty_store, djstaged_schema, committed, caplog):
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 2
        write_waveform(staged)
        write_raw_file(staged)
        dj_faulty_store.plan.fail("remove", path="_leases", times=None)
    assert "Removing lease" in caplog.text
    assert len(Recording()) == 2 and len(lease_files(dj_faulty_store)) == 1  # one file: header, one added entry
    dj_faulty_store.plan.clear()
    report = dj_staged.gc.collect(
        djstaged_schema, store="main", dry_run=False
    )  # the lease is dead: its lock was released
    assert report.section("leases").deleted == 1 and report.section("schema").count == 0
    assert lease_files(dj_faulty_store) == []
    assert (Path(dj_faulty_store.spec["location"]) / (Recording & {"recording_id": 2}).fetch1("raw").path).exists()


def test_read_only_store(Recording, dj_faulty_store, committed):
    dj_faulty_store.plan.read_only()
    with pytest.raises(OSError, match="Read-only file system"), dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 2
        write_raw_file(staged)
    assert_untouched(Recording, dj_faulty_store, committed)


# --- the database refuses the insert ---------------------------------------------------------------


def test_duplicate_key(Recording, dj_faulty_store, committed):
    with pytest.raises(dj.errors.DuplicateError), dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        write_waveform(staged)
        write_raw_directory(staged)
    assert_untouched(Recording, dj_faulty_store, committed)


def test_foreign_key_constraint(djstaged_schema, dj_faulty_store):
    Subject = declare(djstaged_schema, "Subject", "subject : varchar(16)")
    definition = "-> Subject\nsession : int32\n---\nraw : <object@main>"
    Session = djstaged_schema(type("Session", (dj.Manual,), {"definition": definition}), context={"Subject": Subject})
    with pytest.raises(dj.errors.IntegrityError), dj_staged.staged_insert1(Session) as staged:
        staged.rec.update(subject="nobody", session=1)
        write_raw_file(staged)
    assert len(Session()) == 0 and store_files(dj_faulty_store, leases=True) == []


def test_lost_connection(djstaged_schema, dj_faulty_store, djstaged_postgres, djstaged_connection, committed):
    conn = dj.Connection(
        djstaged_postgres.host, djstaged_postgres.user, djstaged_postgres.password, djstaged_postgres.port
    )
    Mine = declare(dj.Schema(djstaged_schema.database, connection=conn), "Recording", DEFINITION)
    pid = conn.query("SELECT pg_backend_pid()").fetchone()[0]
    saved = dj.config["database.reconnect"]
    dj.config["database.reconnect"] = False
    try:
        lost = (dj.errors.LostConnectionError, psycopg2.OperationalError)
        with pytest.raises(lost, match="server closed the connection"), dj_staged.staged_insert1(Mine) as staged:
            staged.rec["recording_id"] = 2
            write_waveform(staged)
            write_raw_directory(staged)
            djstaged_connection.query(f"SELECT pg_terminate_backend({pid})")
    finally:
        dj.config["database.reconnect"] = saved
        conn.close()
    Recording = declare(djstaged_schema, "Recording", DEFINITION)
    assert_untouched(Recording, dj_faulty_store, committed)


# --- the process dies ---------------------------------------------------------------------------------

KILLED_WRITER = """
import json, os, signal, sys
import datajoint as dj
import dj_staged
from dj_staged.testing.services import PostgresInfo, connect_datajoint

cfg = json.loads(sys.argv[1])
connection = connect_datajoint(PostgresInfo(cfg["host"], cfg["port"], cfg["user"], cfg["password"]), cfg["stores"])
schema = dj.Schema(cfg["schema"], connection=connection, create_tables=False)
Recording = schema(type("Recording", (dj.Manual,), {"definition": cfg["definition"]}))
with dj_staged.staged_insert1(Recording) as staged:
    staged.rec["recording_id"] = 2
    fsmap = staged.store("raw", ".zarr")
    for i in range(3):
        fsmap[f"c/{i}"] = b"x" * 1000
    with staged.open("waveform", ".npy") as f:
        f.write(b"\\x93NUMPY half a header")
    print("session", connection.query("SELECT pg_backend_pid()").fetchone()[0], flush=True)
    print("written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    print("unreachable", flush=True)
"""


def test_process_killed_mid_write(Recording, dj_faulty_store, djstaged_schema, djstaged_postgres, tmp_path):
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        write_waveform(staged)
        write_raw_file(staged)
    live = store_files(dj_faulty_store)
    config = {
        "host": djstaged_postgres.host,
        "port": djstaged_postgres.port,
        "user": djstaged_postgres.user,
        "password": djstaged_postgres.password,
        "stores": dict(dj.config.stores),
        "schema": djstaged_schema.database,
        "definition": DEFINITION,
    }
    script = tmp_path / "killed_writer.py"
    script.write_text(KILLED_WRITER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(TEST_PYTHONPATH)}  # the faulty protocol is test-only
    result = subprocess.run(
        [sys.executable, str(script), json.dumps(config)], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout.strip().endswith("written")  # and not "unreachable"
    left = [p for p in store_files(dj_faulty_store) if p not in live]
    assert len(left) == 4 and len(lease_files(dj_faulty_store)) == 1  # the lease: one file
    assert len(Recording()) == 1
    pid = int(re.search(r"^session (\d+)$", result.stdout, re.MULTILINE).group(1))
    wait_for_session_end(djstaged_schema.connection, pid)  # its lease lock goes with its database session
    report = dj_staged.gc.collect(djstaged_schema, store="main", dry_run=False)  # default grace: no waiting
    assert sorted(report.section("schema").paths) == sorted(left)
    assert report.section("leases").deleted == 1 and report.errors == []
    assert store_files(dj_faulty_store, leases=True) == live
    row, root = Recording.fetch1(), Path(dj_faulty_store.spec["location"])
    assert (root / row["raw"].path).read_bytes() == b"".join(bytes([i]) * 100 for i in range(5))
    np.testing.assert_array_equal(np.load(root / row["waveform"].path), np.ones((10, 10)))


# --- hash-addressed fields (<attach@>): staging under _staging/, promotion by a move ------------------


@pytest.fixture
def Reports(djstaged_schema, dj_faulty_store):
    Table = declare(djstaged_schema, "Reports", "report_id : int32\n---\nreport : <attach@main>")
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["report_id"] = 1
        staged.set_filename("report", "first.txt")
        with staged.open("report", ".txt") as f:
            f.write(b"committed report")
    return Table


def stage_report(Table, store, content=b"second report"):
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["report_id"] = 2
        staged.set_filename("report", "second.txt")
        with staged.open("report", ".txt") as f:
            f.write(content)
        assert len(lease_files(store)) == 1


@pytest.mark.parametrize(
    "operation, path",
    [("write", "_staging/"), ("stat", "_staging/"), ("move", "_staging/")],  # no re-read: hashed while written
)
def test_hash_addressed_store_faults(Reports, dj_faulty_store, djstaged_schema, operation, path):
    before = snapshot(dj_faulty_store)
    if operation == "write":
        error = dj_faulty_store.plan.fail("write", path=f"{path}{djstaged_schema.database}/")
        with pytest.raises(OSError) as raised:
            stage_report(Reports, dj_faulty_store)
    else:
        with pytest.raises(OSError) as raised, dj_staged.staged_insert1(Reports) as staged:
            staged.rec["report_id"] = 2
            staged.set_filename("report", "second.txt")
            with staged.open("report", ".txt") as f:
                f.write(b"second report")
            error = dj_faulty_store.plan.fail(operation, path=path)  # during finalization
    assert raised.value is error and dj_faulty_store.plan.fired
    assert len(Reports()) == 1 and len(Reports & {"report_id": 1}) == 1
    # nothing is left, not even when open() itself failed after creating the staging file
    assert snapshot(dj_faulty_store) == before


def test_hash_addressed_leftovers_are_reclaimed_by_gc(Reports, dj_faulty_store, djstaged_schema):
    before = snapshot(dj_faulty_store)
    with pytest.raises(KeyboardInterrupt), dj_staged.staged_insert1(Reports) as staged:
        staged.rec["report_id"] = 2
        staged.set_filename("report", "second.txt")
        with staged.open("report", ".txt") as f:
            f.write(b"interrupted report")
        staging = staged.field("report").state.staging_path
        report = dj_staged.gc.collect(djstaged_schema, store="main", grace=0, dry_run=False)
        assert report.section("staging").protected == {staging: LEASED_REASON} and report.deleted == 0
        raise KeyboardInterrupt
    assert [p for p in store_files(dj_faulty_store) if p not in before] == [staging]
    [lease] = scan_leases(resolve_store("main", dj.config), djstaged_schema.database)
    assert lease.abandoned and lease.paths == [staging] and lease_files(dj_faulty_store) == [lease.root]
    report = dj_staged.gc.collect(djstaged_schema, store="main", dry_run=False)  # default grace: abandoned, so at once
    assert report.section("staging").paths == [staging] and report.section("staging").deleted == 1
    assert snapshot(dj_faulty_store) == before
    assert len(Reports()) == 1 and len(Reports & {"report_id": 1}) == 1


@pytest.mark.parametrize("layout", ["seek", "unknown-length blob"])
def test_store_fails_during_the_hash_reread(djstaged_schema, dj_faulty_store, layout):
    """A write that could not be hashed in the stream is re-read once at exit; a read failure there unwinds."""
    Table = declare(djstaged_schema, "Rehashed", "k : int32\n---\nv = null : <hash@main>\nb = null : <blob@main>")
    Table.insert1({"k": 1, "v": b"committed"})
    before = snapshot(dj_faulty_store)
    with pytest.raises(OSError) as raised, dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 2
        if layout == "seek":
            with staged.open("v", ".bin") as f:
                f.write(b"xxxx data")
                f.seek(0)
                f.write(b"some")
        else:
            with staged.open("b", ".bin") as f:
                f.write(b"raw bytes of unknown length")
        error = dj_faulty_store.plan.fail("read", path="_staging/")
    assert raised.value is error and dj_faulty_store.plan.fired
    assert snapshot(dj_faulty_store) == before
    assert len(Table()) == 1 and (Table & "k=1").fetch1("v") == b"committed"
