"""Garbage collection: leases protect staged writes in flight; collection never touches what it does not own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datajoint as dj
import numpy as np
import pytest
from support.stores import lease_files, lease_records, put_file, store_files
from support.tables import declare, stage_recording

import dj_staged
import dj_staged.gc
from dj_staged.cli import main, parse_duration
from dj_staged.errors import StagedInsertError
from dj_staged.gc.policy import ABANDONED, ABANDONED_LEASE, LEASED, YOUNG
from dj_staged.leases import held_lease_keys, scan_leases
from dj_staged.stores import resolve_store

DAY = 86400.0
LATER = 2 * DAY  # an injected clock two days ahead: every lease expired, every object older than 24 h


def orphan(table, key):
    """A staged row deleted again: DataJoint leaves its objects for garbage collection."""
    paths = stage_recording(table, key, raw=b"orphaned")
    (table & key).delete()
    return paths


def read_lease(store, path: str) -> dict:
    return json.loads((Path(store.spec["location"]) / path).read_bytes())


def collect(schema, **options):
    return dj_staged.gc.collect(schema, store="main", **options)


def test_a_block_holds_a_lease_naming_its_paths_and_removes_it(Recording, djstaged_local_store):
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.ones(3))
        fsmap = staged.store("raw", ".zarr")
        fsmap["zarr.json"] = b"{}"
        (lease,) = scan_leases(resolve_store("main", dj.config), Recording.database)  # one lease per block and store
        assert lease.lock in held_lease_keys(Recording.connection) and lease.readable and not lease.abandoned
        assert lease.table == Recording.table_name
        on_a_local_store = [lease.root]  # one file, no folder
        assert lease.one_file and lease_files(djstaged_local_store) == on_a_local_store
        entries = [(entry.field, entry.paths) for entry in lease.entries]
        assert sorted(entries) == sorted(
            [("waveform", [staged.field("waveform").state.path]), ("raw", [staged.field("raw").state.path])]
        )
    assert lease_files(djstaged_local_store) == []
    assert len(Recording()) == 1


def test_a_resumable_block_keeps_its_lease_in_a_folder(Recording, djstaged_local_store):
    """Its checkpoints are replaced whole, one file each, which a lease that is one appended file cannot hold."""
    with dj_staged.staged_insert1(Recording, resume=True) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.ones(3))
        with staged.open("raw", ".bin") as f:
            f.write(b"resumable")
        (lease,) = scan_leases(resolve_store("main", dj.config), Recording.database)
        assert lease.resumable and not lease.one_file
        assert lease_files(djstaged_local_store) and all(
            f.startswith(f"{lease.root}/") for f in lease_files(djstaged_local_store)
        )
    assert lease_files(djstaged_local_store) == [] and len(Recording()) == 1


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_lease_ends_when_the_block_fails(Recording, djstaged_local_store, failure):
    with pytest.raises(failure), dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("raw", ".bin") as f:
            f.write(b"partial")
        assert len(lease_files(djstaged_local_store)) == 1
        lock = lease_records(djstaged_local_store)[0]["lock"]
        written = staged.field("raw").state.path
        raise failure
    assert lock not in held_lease_keys(Recording.connection)  # no longer live either way
    if failure is RuntimeError:
        assert lease_files(djstaged_local_store) == [] and store_files(djstaged_local_store) == []
    else:  # interrupted: nothing cleaned up in-process; the lease stays, abandoned, naming what was written
        (lease,) = scan_leases(resolve_store("main", dj.config), Recording.database)
        assert lease.abandoned and lease.readable and lease.one_file and lease.paths == [written]
        assert lease_files(djstaged_local_store) == [lease.root]


def test_datajoint_collector_alone_would_delete_a_write_in_flight(Recording, djstaged_local_store):
    """The hazard the combined collection exists for (see README, Failure and recovery)."""
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("raw", ".bin") as f:
            f.write(b"in flight")
        in_flight = staged.field("raw").state.path
        stats = dj.gc.GarbageCollector(dj_schema_of(Recording), store="main").collect()
        assert in_flight in stats["orphaned_schema_paths"]
        ours = collect(dj_schema_of(Recording), grace=0)
        assert in_flight not in ours.paths
        assert ours.section("schema").protected[in_flight] == LEASED
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.ones(2))


def dj_schema_of(table):
    return dj.Schema(table.database, connection=table.connection, create_schema=False)


def test_combined_collection_with_zero_grace_keeps_the_write_in_flight(Recording, djstaged_local_store):
    schema = dj_schema_of(Recording)
    with dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        fsmap = staged.store("raw", ".zarr")
        fsmap["zarr.json"] = b"{}"
        fsmap["c/0"] = b"chunk"
        report = collect(schema, grace=0, dry_run=False)
        assert report.deleted == 0 and report.paths == []
        fsmap["c/1"] = b"chunk"
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.ones(2))
    row = Recording.fetch1()
    assert row["raw"].fs.cat(row["raw"].full_path + "/c/0") == b"chunk"
    assert collect(schema, grace=0, dry_run=False, now=time.time() + LATER).deleted == 0


def test_orphans_match_datajoint_and_are_deleted_after_grace(Recording, djstaged_local_store, tmp_path):
    schema = dj_schema_of(Recording)
    source = tmp_path / "ordinary.bin"
    source.write_bytes(b"ordinary")
    Recording.insert1({"recording_id": 1, "waveform": np.arange(2.0), "raw": str(source)})
    kept = stage_recording(Recording, {"recording_id": 2})
    gone = orphan(Recording, {"recording_id": 3})
    theirs = dj.gc.GarbageCollector(schema, store="main").collect()
    young = collect(schema)
    assert young.count == 0 and set(young.section("schema").protected.values()) == {YOUNG}
    report = collect(schema, now=time.time() + LATER)
    assert report.section("schema").paths == sorted(theirs["orphaned_schema_paths"]) == sorted(gone)
    assert report.section("schema").bytes == theirs["schema_paths_orphaned_bytes"]
    assert all(p in store_files(djstaged_local_store) for p in gone)  # a dry run by default
    deleted = collect(schema, now=time.time() + LATER, dry_run=False)
    assert deleted.deleted == 2 and deleted.errors == []
    files = store_files(djstaged_local_store)
    assert not any(p in files for p in gone) and all(p in files for p in kept)
    assert (Recording & {"recording_id": 1}).fetch1("raw").read() == b"ordinary"
    assert (Recording & {"recording_id": 2}).fetch1("raw").read() == b"raw bytes"
    np.testing.assert_array_equal((Recording & {"recording_id": 2}).fetch1("waveform").load(), np.arange(4.0))


def test_never_deletes_an_object_a_row_references(Recording, djstaged_local_store):
    schema = dj_schema_of(Recording)
    referenced = [p for k in range(3) for p in stage_recording(Recording, {"recording_id": k}, raw=bytes([k]) * 10)]
    before = {p: (Path(djstaged_local_store.spec["location"]) / p).read_bytes() for p in referenced}
    report = collect(schema, grace=0, now=time.time() + LATER, dry_run=False)
    assert report.count == 0 and report.deleted == 0
    assert {p: (Path(djstaged_local_store.spec["location"]) / p).read_bytes() for p in referenced} == before


def test_never_deletes_outside_its_sections(Recording, djstaged_local_store):
    schema = dj_schema_of(Recording)
    gone = orphan(Recording, {"recording_id": 1})
    db = Recording.database
    foreign = [
        "notes/readme.txt",
        "_staging/loose.bin",
        f"_staging_old/{db}/t/x.bin",
        f"_schema_backup/{db}/t/x.bin",
        f"_filepath/{db}/raw.bin",
        f"_hash/{db}/not-a-hash-name",
        f"{db}/recording/legacy.bin",
    ]
    for path in foreign:
        put_file(djstaged_local_store, path, age=3 * DAY)
    report = collect(schema, grace=0, now=time.time() + LATER, dry_run=False)
    assert sorted(report.paths) == sorted(gone)
    files = store_files(djstaged_local_store)
    assert all(path in files for path in foreign)


def test_never_deletes_another_schemas_objects(Recording, djstaged_local_store, djstaged_connection):
    other = dj.Schema(f"{Recording.database}_other", connection=djstaged_connection)
    try:
        Other = declare(other, "Recording", "recording_id : int32\n---\nwaveform : <npy@main>\nraw : <object@main>")
        their_orphans = orphan(Other, {"recording_id": 1})
        their_staging = f"_staging/{other.database}/recording/blob_abcdefgh.bin"
        put_file(djstaged_local_store, their_staging, age=3 * DAY)
        put_file(djstaged_local_store, f"_staging/{Recording.database}/recording/blob_ijklmnop.bin", age=3 * DAY)
        report = collect(dj_schema_of(Recording), grace=0, now=time.time() + LATER, dry_run=False)
        assert report.deleted == 1
        files = store_files(djstaged_local_store)
        assert all(p in files for p in [*their_orphans, their_staging])
        theirs = dj_staged.gc.collect(other, store="main", grace=0, now=time.time() + LATER)
        assert sorted(theirs.paths) == sorted([*their_orphans, their_staging])
    finally:
        other.drop(prompt=False)


def test_staging_leftovers_are_reported_then_deleted(Recording, djstaged_local_store):
    schema = dj_schema_of(Recording)
    db = Recording.database
    single = put_file(djstaged_local_store, f"_staging/{db}/recording/blob_aaaaaaaa.bin", b"x" * 100, age=3 * DAY)
    put_file(djstaged_local_store, f"_staging/{db}/recording/raw_bbbbbbbb.zarr/zarr.json", b"{}", age=2 * DAY)
    put_file(djstaged_local_store, f"_staging/{db}/recording/raw_bbbbbbbb.zarr/c/0", b"y" * 10, age=2 * DAY)
    fresh = put_file(djstaged_local_store, f"_staging/{db}/recording/blob_cccccccc.bin", b"z")
    report = dj_staged.gc.collect_staging(schema, store="main")
    staging = report.section("staging")
    assert staging.count == 2 and staging.bytes == 112
    assert abs(staging.oldest - single.stat().st_mtime) < 1
    assert staging.protected == {f"_staging/{db}/recording/blob_cccccccc.bin": YOUNG}
    assert [s.section for s in report.sections] == ["staging", "leases"]  # DataJoint's sections untouched
    text = report.format()
    assert text.startswith("Dry run: would delete 2 objects (3 files, 112 B) in 1 store; kept 1 object: 1 younger")
    assert "--delete" in text
    assert fresh.exists() and single.exists()
    done = dj_staged.gc.collect_staging(schema, store="main", dry_run=False)
    assert done.deleted == 3
    assert store_files(djstaged_local_store) == [f"_staging/{db}/recording/blob_cccccccc.bin"]
    assert not (Path(djstaged_local_store.spec["location"]) / f"_staging/{db}/recording/raw_bbbbbbbb.zarr").exists()


FORMS = pytest.mark.parametrize("one_file", [False, True], ids=["folder", "one-file"])  # the two forms of a lease


@FORMS
def test_live_lease_protects_old_staging_files(Recording, djstaged_local_store, foreign_lease, one_file):
    db = Recording.database
    path = f"_staging/{db}/recording/blob_dddddddd.bin"
    put_file(djstaged_local_store, path, age=3 * DAY)  # a write that started days ago and is still going
    with foreign_lease(db, [path], live=True, one_file=one_file):
        report = collect(dj_schema_of(Recording), grace=0, dry_run=False)
        assert report.section("staging").protected == {path: LEASED}
        assert path in store_files(djstaged_local_store)


def test_a_live_lease_does_not_depend_on_the_collector_clock(Recording, djstaged_local_store, foreign_lease):
    """A collector whose clock runs days ahead of the writer's still sees the lease live: no clock decides it."""
    db = Recording.database
    path = f"_staging/{db}/recording/blob_ffffffff.bin"
    put_file(djstaged_local_store, path)
    with foreign_lease(db, [path], live=True):
        report = collect(dj_schema_of(Recording), grace=0, dry_run=False, now=time.time() + 30 * DAY)
        assert report.section("staging").protected == {path: LEASED} and report.deleted == 0


@FORMS
def test_a_dead_lease_is_reclaimed_with_its_objects_at_once(Recording, djstaged_local_store, foreign_lease, one_file):
    """A writer that died (its lock is free): what it names belongs to no row, so no grace period applies."""
    db = Recording.database
    path = f"_staging/{db}/recording/blob_eeeeeeee.bin"
    put_file(djstaged_local_store, path)  # brand new
    with foreign_lease(db, [path], live=False, one_file=one_file) as root:
        report = collect(dj_schema_of(Recording), dry_run=False)
        assert report.section("staging").paths == [path]
        assert report.section("leases").paths == [root if one_file else f"{root}/lease.json"]
        assert store_files(djstaged_local_store, leases=True) == []


def test_a_dead_lease_never_releases_what_a_row_references(Recording, djstaged_local_store, foreign_lease):
    """A writer that died after its commit, before removing its lease: the row's objects stay."""
    paths = stage_recording(Recording, {"recording_id": 1})
    with foreign_lease(Recording.database, list(paths), live=False):
        report = collect(dj_schema_of(Recording), dry_run=False)
    assert report.section("schema").paths == [] and report.section("leases").deleted == 1
    assert all(p in store_files(djstaged_local_store) for p in paths)
    assert (Recording & {"recording_id": 1}).fetch1("raw").read() == b"raw bytes"


def test_unreadable_lease_is_collected_and_protects_nothing_by_itself(Recording, djstaged_local_store):
    """A lease folder without a readable header was left by a writer killed while creating it, before it wrote."""
    db = Recording.database
    gone = orphan(Recording, {"recording_id": 1})
    young = f"_staging/{db}/recording/blob_gggggggg.bin"
    put_file(djstaged_local_store, young)
    bad = f"_staging/_leases/{db}/0123abcd/lease.json"
    put_file(djstaged_local_store, bad, b"{not json")
    report = collect(dj_schema_of(Recording), dry_run=False, now=time.time() + LATER)
    assert report.errors == [] and sorted(report.section("schema").paths) == sorted(gone)
    assert report.section("leases").paths == [bad]
    assert report.section("staging").paths == [young]  # older than the grace by the injected clock


@FORMS
def test_a_lease_header_being_written_is_kept_while_its_lock_is_held(
    Recording, djstaged_local_store, djstaged_postgres, one_file
):
    """A writer creates its header without the gate when its paths are new: a collector may read it half-written.

    The lease id begins with the lock key, so the collector keeps the lease (its folder, or its one file) while
    that lock is held (the writer is alive, perhaps paused mid-write), and collects it once the lock is gone.
    """
    from dj_staged.leases.locks import LEASE_NS, new_lease_key
    from dj_staged.leases.records import lease_id_for

    key = new_lease_key()
    root = f"_staging/_leases/{Recording.database}/{lease_id_for(key)}"
    half, root = (f"{root}.jsonl", f"{root}.jsonl") if one_file else (f"{root}/lease.json", root)
    put_file(djstaged_local_store, half, b'{"version": 2, "lease_')
    writer = dj.Connection(
        djstaged_postgres.host, djstaged_postgres.user, djstaged_postgres.password, djstaged_postgres.port
    )
    try:
        writer.query("SELECT pg_advisory_lock(%s, %s)", args=(LEASE_NS, key))
        report = collect(dj_schema_of(Recording), dry_run=False, now=time.time() + LATER)
        assert report.errors == [] and report.deleted == 0
        assert report.section("leases").protected == {root: LEASED}
        assert half in store_files(djstaged_local_store, leases=True)
        writer.query("SELECT pg_advisory_unlock(%s, %s)", args=(LEASE_NS, key))  # the writer died meanwhile
        report = collect(dj_schema_of(Recording), dry_run=False, now=time.time() + LATER)
    finally:
        writer.close()
    assert report.section("leases").paths == [half] and half not in store_files(djstaged_local_store, leases=True)


def test_a_lease_that_is_one_file_reads_its_lines_and_skips_a_half_one(Recording, djstaged_local_store):
    """A lease that is one file: the header's line, each appended entry, the abandoned mark; the half line a writer
    killed mid-append left is skipped, and the lines before it still count."""
    from dj_staged.leases.records import LeaseEntry, LeaseRecord, lease_id_for, mark_abandoned, write_header

    store, db = resolve_store("main", dj.config), Recording.database
    record = LeaseRecord(lease_id=lease_id_for(7), schema=db, lock=7, table="recording", store="main", one_file=True)
    write_header(store, record, LeaseEntry(field="raw", key={"recording_id": 1}, paths=["a"], at=1.0))
    entry = LeaseEntry(field="raw", key={"recording_id": 1}, paths=["b"], at=2.0)
    with store.append(record.root) as journal:
        journal.write(json.dumps(vars(entry)).encode() + b"\n" + b'{"at": 3.0, "field": "raw", "paths": ["c')
    (read,) = scan_leases(store, db)
    assert read.readable and read.one_file and read.lock == 7 and read.paths == ["a", "b"] and not read.abandoned
    mark_abandoned(store, read)  # after a half line: the mark is a line of its own
    (read,) = scan_leases(store, db)
    assert read.abandoned and read.paths == ["a", "b"] and lease_files(djstaged_local_store) == [record.root]


def test_keyboard_interrupt_leftover_is_reclaimed_at_once(Recording, djstaged_local_store):
    schema = dj_schema_of(Recording)
    kept = stage_recording(Recording, {"recording_id": 1})
    with pytest.raises(KeyboardInterrupt), dj_staged.staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 2
        with staged.open("raw", ".bin") as f:
            f.write(b"interrupted")
        leftover = staged.field("raw").state.path
        raise KeyboardInterrupt
    assert leftover in store_files(djstaged_local_store) and len(Recording()) == 1
    report = collect(schema, dry_run=False)  # default grace: the abandoned write is reclaimed at once
    assert report.section("schema").paths == [leftover]
    assert report.section("schema").why(leftover) == ABANDONED
    assert any(leftover in line and line.endswith(ABANDONED) for line in report.format().splitlines())
    assert report.section("leases").why(report.section("leases").paths[0].rsplit("/", 1)[0]) == ABANDONED_LEASE
    assert sorted(store_files(djstaged_local_store)) == sorted(kept)
    assert Recording.fetch1("raw").read() == b"raw bytes"


def test_store_whose_prefix_overlaps_staging_is_refused(djstaged_schema, djstaged_local_store):
    dj.config.stores["main"] = {**djstaged_local_store.spec, "schema_prefix": "_staging"}
    with pytest.raises(StagedInsertError):
        dj_staged.gc.collect(djstaged_schema, store="main")


def test_unreadable_references_refuse_collection(djstaged_schema, djstaged_local_store):
    from datajoint.builtin_codecs.schema import SchemaCodec

    class TransientCodec(dj_staged.SchemaAddressedStaging, SchemaCodec):
        name = "gc_transient_test"

        def encode(self, value, *, key=None, context=None, store_name=None):
            raise NotImplementedError

        def decode(self, stored, *, key=None, context=None):
            return stored

    Table = declare(djstaged_schema, "Transient", "k : int32\n---\nraw : <gc_transient_test@main>")
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        with staged.open("raw", ".bin") as f:
            f.write(b"live data")
    dj.codecs.unregister_codec("gc_transient_test")  # e.g. the package defining the codec is not imported
    (live,) = store_files(djstaged_local_store)
    assert (
        live in dj.gc.GarbageCollector(djstaged_schema, store="main").collect()["orphaned_schema_paths"]
    )  # the hazard
    with pytest.raises(StagedInsertError, match=r"Refusing to collect: the references of .*transient.* not registered"):
        dj_staged.gc.collect(djstaged_schema, store="main", grace=0, now=time.time() + LATER, dry_run=False)
    assert store_files(djstaged_local_store) == [live]


@pytest.mark.parametrize(
    "text, seconds", [("0", 0), ("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("2d", 172800), ("1w", 604800)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


def test_parse_duration_rejects_garbage():
    with pytest.raises(Exception, match="not a duration"):
        parse_duration("soon")


def test_cli_reports_then_deletes(Recording, djstaged_local_store, capsys):
    gone = orphan(Recording, {"recording_id": 1})
    argv = ["gc", "--schema", Recording.database, "--store", "main", "--grace", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("Dry run: would delete 2 objects") and all(
        p in store_files(djstaged_local_store) for p in gone
    )
    assert main([*argv, "--json", "--delete"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is False and report["deleted_files"] == 2
    assert store_files(djstaged_local_store) == []


def test_cli_unknown_schema_is_a_clear_error(djstaged_connection, djstaged_local_store, capsys):
    assert main(["gc", "--schema", "no_such_schema_here", "--store", "main"]) == 2
    assert "no_such_schema_here" in capsys.readouterr().err


def test_console_script_runs_from_a_datajoint_json(Recording, djstaged_local_store, djstaged_postgres, tmp_path):
    gone = orphan(Recording, {"recording_id": 1})
    config = {
        "database": {
            "backend": "postgresql",
            "host": djstaged_postgres.host,
            "port": djstaged_postgres.port,
            "user": "postgres",
        },
        "safemode": False,
        "stores": {"default": "main", "main": djstaged_local_store.spec},
    }
    (tmp_path / "datajoint.json").write_text(json.dumps(config))
    script = Path(sys.executable).with_name("dj-staged")
    result = subprocess.run(
        [str(script), "gc", "--schema", Recording.database, "--grace", "0", "--delete", "--json"],
        cwd=tmp_path,
        env={**os.environ, "DJ_PASS": djstaged_postgres.password or "unused"},  # trust authentication on the socket
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted_files"] == 2, result.stdout
    assert not any(p in store_files(djstaged_local_store) for p in gone)
