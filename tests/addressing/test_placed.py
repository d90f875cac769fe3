"""Staged ``<filepath@>``: a file or folder written to a path the writer chooses, and its row, atomically.

The path is checked as DataJoint's ``FilepathCodec.encode`` checks it, and more, before the first byte; the bytes
are staged under the lease and placed at the path just before the commit; one writer at a time holds a path; a
path that holds something is refused unless ``overwrite=True`` and no row references it; on failure nothing is
left at the path; a collector reclaims only what a dead writer placed there and still carries its mark. The
row-for-row comparison with ``insert1`` on every store is the conformance kit's (tests/test_conformance.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import datajoint as dj
import pytest
from support import workers
from support.child import ChildDied, PausableChild
from support.database import advisory_locks
from support.paths import TEST_PYTHONPATH
from support.pgproxy import connect_datajoint_through
from support.stores import store_files
from support.tables import declare

import dj_staged
import dj_staged.gc
from dj_staged import steps
from dj_staged.errors import HandleModeError, InvalidPathError, PathTakenError
from dj_staged.leases.locks import COMMIT_GUARD_TAG
from dj_staged.stores import resolve_store

DEFINITION = "k : int32\n---\nplaced : <filepath@{store}>"


@pytest.fixture
def Placed(djstaged_schema, store):
    return declare(djstaged_schema, "Placed", DEFINITION.format(store=store.name))


@pytest.fixture
def LocalPlaced(djstaged_schema, djstaged_local_store):
    return declare(djstaged_schema, "Placed", DEFINITION.format(store="main"))


def stage(table, key: int, path: str, data: bytes, **options) -> None:
    with dj_staged.staged_insert1(table) as staged:
        staged.rec["k"] = key
        with staged.open("placed", path=path, **options) as f:
            f.write(data)


def contents(store) -> dict[str, bytes]:
    """Every file in the store (leases too) and its bytes."""
    staged_store = resolve_store(store.name, dj.config)
    return {path: staged_store.read_many([path])[path] for path in store_files(store, leases=True)}


def put(store, path: str, data: bytes) -> None:
    resolve_store(store.name, dj.config).create(path, data)


def test_the_row_references_the_file_at_the_chosen_path(Placed, store):
    stage(Placed, 1, "subject01/session001/data.bin", b"recorded bytes")
    assert store_files(store, leases=True) == ["subject01/session001/data.bin"]
    row = (Placed & {"k": 1}).fetch1("placed")
    assert row.read() == b"recorded bytes"
    value = Placed.connection.query(f"SELECT placed FROM {Placed.full_table_name}").fetchone()[0]
    assert {k: v for k, v in value.items() if k != "timestamp"} == {
        "path": "subject01/session001/data.bin",
        "store": store.name,
        "size": 14,
        "is_dir": False,
    }


@pytest.mark.parametrize(
    "path, error, message",
    [
        ("../outside.bin", InvalidPathError, "would not stay inside the store"),
        ("a/../../outside.bin", InvalidPathError, "would not stay inside the store"),
        ("/etc/passwd", InvalidPathError, "is absolute"),
        ("a//b.bin", InvalidPathError, "would not stay inside the store"),
        ("a/./b.bin", InvalidPathError, "would not stay inside the store"),
        ("a\\b.bin", InvalidPathError, "would not stay inside the store"),
        ("a/b\x00.bin", InvalidPathError, "would not stay inside the store"),
        ("_staging/x.bin", InvalidPathError, "dj-staged's section"),
        ("_hash/x.bin", InvalidPathError, "reserved section '_hash'"),
        ("_schema/db/x.bin", InvalidPathError, "reserved section '_schema'"),
        ("", HandleModeError, "takes a path you choose"),
    ],
)
def test_a_bad_path_is_refused_before_the_first_byte(LocalPlaced, djstaged_local_store, path, error, message):
    with pytest.raises(error, match=message) as raised:
        stage(LocalPlaced, 1, path, b"never written")
    assert raised.value.field == "placed"
    assert store_files(djstaged_local_store, leases=True) == [] and len(LocalPlaced()) == 0
    assert not (Path(djstaged_local_store.spec["location"]).parent / "outside.bin").exists()


def test_the_store_s_filepath_prefix_is_enforced_as_insert1_enforces_it(djstaged_schema, djstaged_local_store):
    dj.config.stores["main"]["filepath_prefix"] = "acquisition"
    table = declare(djstaged_schema, "Prefixed", DEFINITION.format(store="main"))
    with pytest.raises(InvalidPathError, match="must use prefix 'acquisition'"):
        stage(table, 1, "elsewhere/data.bin", b"x")
    assert store_files(djstaged_local_store, leases=True) == []
    stage(table, 1, "acquisition/data.bin", b"inside")
    assert (table & {"k": 1}).fetch1("placed").read() == b"inside"


def test_filepath_with_no_store_name_is_refused_as_insert1_refuses_it(djstaged_schema, djstaged_local_store):
    table = declare(djstaged_schema, "Unnamed", "k : int32\n---\nplaced : <filepath@>")
    with pytest.raises(dj.DataJointError) as theirs:
        table.insert1({"k": 1, "placed": "x.bin"})
    with pytest.raises(dj.DataJointError, match="Storage '' is requested but not configured") as ours:
        stage(table, 1, "x.bin", b"x")
    assert "not configured" in str(theirs.value)
    assert ours.value.field == "placed" and store_files(djstaged_local_store, leases=True) == []


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.open("placed", ".bin", path="a.bin"), "give the extension as part of path="),
        (lambda s: s.open("placed"), "takes a path you choose"),
        (lambda s: s.open("raw", ".bin", path="a.bin"), "path= and overwrite= are for <filepath@> fields"),
        (lambda s: s.store("raw", overwrite=True), "path= and overwrite= are for <filepath@> fields"),
        (lambda s: (s.open("placed", path="a.bin").close(), s.open("placed", path="b.bin")), "already staged"),
    ],
)
def test_path_and_overwrite_are_asked_for_where_they_belong(djstaged_schema, djstaged_local_store, call, message):
    table = declare(djstaged_schema, "Both", "k : int32\n---\nplaced : <filepath@main>\nraw : <object@main>")
    with pytest.raises(HandleModeError, match=message):
        with dj_staged.staged_insert1(table) as staged:
            staged.rec["k"] = 1
            call(staged)
    assert store_files(djstaged_local_store, leases=True) == [] and len(table()) == 0


def test_a_file_already_at_the_path_is_refused_and_untouched(Placed, store):
    put(store, "acq/data.bin", b"acquired by another program")
    before = contents(store)
    with pytest.raises(PathTakenError, match="'acq/data.bin' .* already holds a file") as raised:
        stage(Placed, 1, "acq/data.bin", b"staged")
    assert raised.value.field == "placed" and isinstance(raised.value, InvalidPathError)
    assert contents(store) == before and len(Placed()) == 0


def test_overwrite_replaces_a_file_no_row_references(Placed, store):
    put(store, "acq/data.bin", b"a half copy left by an earlier attempt")
    stage(Placed, 1, "acq/data.bin", b"the whole recording", overwrite=True)
    assert (Placed & {"k": 1}).fetch1("placed").read() == b"the whole recording"
    assert store_files(store, leases=True) == ["acq/data.bin"]


def test_overwrite_never_replaces_a_file_another_schema_s_row_references(Placed, store, djstaged_connection):
    other = dj.Schema(f"{Placed.database}_other", connection=djstaged_connection)
    try:
        Theirs = declare(other, "Theirs", DEFINITION.format(store=store.name))
        put(store, "shared/data.bin", b"their recording")
        Theirs.insert1({"k": 1, "placed": "shared/data.bin"})
        before = contents(store)
        with pytest.raises(PathTakenError, match=r"referenced by a row of .*_other\.theirs"):
            stage(Placed, 1, "shared/data.bin", b"ours", overwrite=True)
        assert contents(store) == before and len(Placed()) == 0
        assert (Theirs & {"k": 1}).fetch1("placed").read() == b"their recording"
    finally:
        other.drop(prompt=False)


def test_a_failure_after_placement_leaves_nothing_at_the_path_nor_the_folders_it_made(
    LocalPlaced, djstaged_local_store
):
    root = Path(djstaged_local_store.spec["location"])
    (root / "subject01").mkdir()
    (root / "subject01" / "notes.txt").write_bytes(b"the lab's own file")

    def fail(**context):
        assert (root / context["path"]).read_bytes() == b"placed bytes"  # it is there when the step is reached
        raise RuntimeError("the commit fails after placement")

    with steps.observe("writer.place", fail), pytest.raises(RuntimeError, match="after placement"):
        stage(LocalPlaced, 1, "subject01/session001/day1/data.bin", b"placed bytes")
    assert store_files(djstaged_local_store, leases=True) == ["subject01/notes.txt"]
    assert sorted(p.name for p in (root / "subject01").iterdir()) == ["notes.txt"]
    assert len(LocalPlaced()) == 0


def test_a_duplicate_key_refused_at_the_commit_takes_its_placed_file_away(Placed, store):
    stage(Placed, 1, "acq/first.bin", b"first")
    with pytest.raises(dj.errors.DuplicateError):
        with dj_staged.staged_insert1(Placed) as staged:
            staged.rec["k"] = 2
            with staged.open("placed", path="acq/second.bin") as f:
                f.write(b"second")
            Placed.insert1({"k": 2, "placed": "acq/first.bin"})  # the key is taken while the block runs
    assert store_files(store, leases=True) == ["acq/first.bin"]
    assert (Placed & {"k": 2}).fetch1("placed").read() == b"first"


def test_two_writers_racing_for_a_path_one_wins_the_other_is_refused(LocalPlaced, djstaged_local_store, elsewhere):
    """Writer A holds the path (paused at its first write); B, on another session, is refused at its first handle,
    naming A's session; A commits; B asking again finds the file referenced."""
    theirs = elsewhere(type("Placed", (dj.Manual,), {"definition": DEFINITION.format(store="main")}))
    holding, go = threading.Event(), threading.Event()
    writer = threading.current_thread()

    def pause(**context):
        if threading.current_thread() is not writer:
            holding.set()
            assert go.wait(60)

    outcome: list[object] = []

    def write_a():
        try:
            stage(LocalPlaced, 1, "race/data.bin", b"A" * 1000)
            outcome.append("committed")
        except Exception as error:  # reported to the test
            outcome.append(error)

    with steps.observe("writer.write", pause):
        a = threading.Thread(target=write_a)
        a.start()
        assert holding.wait(60)
        a_pid = LocalPlaced.connection.query("SELECT pg_backend_pid()").fetchone()[0]
        with pytest.raises(PathTakenError, match=f"database session {a_pid}"):
            stage(theirs, 2, "race/data.bin", b"B" * 1000)
        go.set()
        a.join(60)
    assert outcome == ["committed"]
    with pytest.raises(PathTakenError, match="referenced by a row"):
        stage(theirs, 2, "race/data.bin", b"B" * 1000, overwrite=True)
    assert store_files(djstaged_local_store, leases=True) == ["race/data.bin"]
    assert (LocalPlaced & {"k": 1}).fetch1("placed").read() == b"A" * 1000
    assert advisory_locks(LocalPlaced.connection) == []


def test_a_path_whose_writer_failed_is_free_again(LocalPlaced, djstaged_local_store, elsewhere):
    theirs = elsewhere(type("Placed", (dj.Manual,), {"definition": DEFINITION.format(store="main")}))
    with pytest.raises(ValueError, match="the writer's own error"):
        with dj_staged.staged_insert1(LocalPlaced) as staged:
            staged.rec["k"] = 1
            with staged.open("placed", path="retry/data.bin") as f:
                f.write(b"partial")
            raise ValueError("the writer's own error")
    stage(theirs, 2, "retry/data.bin", b"second attempt")
    assert (LocalPlaced & {"k": 2}).fetch1("placed").read() == b"second attempt"


def test_a_batch_places_each_row_and_refuses_a_path_twice(djstaged_schema, store):
    table = declare(djstaged_schema, "Batch", DEFINITION.format(store=store.name))
    with dj_staged.staged_insert(table) as batch:
        for key in (1, 2):
            with batch.row() as staged:
                staged.rec["k"] = key
                with staged.open("placed", path=f"batch/{key}.bin") as f:
                    f.write(b"row %d" % key)
        with pytest.raises(PathTakenError, match="another row of this staged insert already writes"):
            with batch.row() as staged:
                staged.rec["k"] = 3
                staged.open("placed", path="batch/1.bin")
    assert sorted(row["k"] for row in table.to_dicts()) == [1, 2]
    assert store_files(store, leases=True) == ["batch/1.bin", "batch/2.bin"]
    for key in (1, 2):
        assert (table & {"k": key}).fetch1("placed").read() == b"row %d" % key


def test_a_collector_running_between_placement_and_commit_keeps_the_file(
    LocalPlaced, djstaged_local_store, djstaged_schema
):
    reports = []

    def collect(**context):
        reports.append(
            dj_staged.gc.collect(djstaged_schema, store="main", grace=0, dry_run=False, now=time.time() + 86400)
        )

    with steps.observe("writer.place", collect):
        stage(LocalPlaced, 1, "kept/data.bin", b"kept while its writer is live")
    (report,) = reports
    assert report.deleted == 0 and report.errors == []
    assert [s for s in report.sections if s.section == "placements"] == []  # live: not even a candidate
    assert (LocalPlaced & {"k": 1}).fetch1("placed").read() == b"kept while its writer is live"


def child_writer(djstaged_postgres, djstaged_schema, store, key: int, path: str, step: str, how: str) -> PausableChild:
    db = {"host": djstaged_postgres.host, "port": djstaged_postgres.port}
    db.update(user=djstaged_postgres.user, password=djstaged_postgres.password)
    return PausableChild(
        workers.placing_writer,
        db,
        dict(dj.config.stores),
        djstaged_schema.database,
        DEFINITION.format(store=store.name),
        key,
        path,
        b"bytes of a writer that dies",
        step,
        how,
    )


@pytest.fixture
def child_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", ":".join(TEST_PYTHONPATH))


def killed(child: PausableChild, connection) -> None:
    """Wait for the SIGKILLed child, then for the server to end its session (its locks go with it)."""
    with pytest.raises(ChildDied):
        child.join(timeout=120)
    deadline = time.monotonic() + 30
    while advisory_locks(connection) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert advisory_locks(connection) == []


def test_a_writer_killed_after_placement_leaves_a_file_the_collector_reclaims(
    Placed, store, djstaged_postgres, djstaged_schema, child_path
):
    put(store, "acq/other.bin", b"the lab's own file, years old")
    with child_writer(djstaged_postgres, djstaged_schema, store, 1, "acq/killed.bin", "writer.place", "kill") as child:
        killed(child, djstaged_schema.connection)
    assert "acq/killed.bin" in store_files(store)
    report = dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False)
    assert report.errors == []
    (placements,) = [s for s in report.sections if s.section == "placements"]
    assert list(placements.collectable) == ["acq/killed.bin"] and placements.deleted == 1
    assert contents(store) == {"acq/other.bin": b"the lab's own file, years old"}
    assert len(Placed()) == 0
    stage(Placed, 1, "acq/killed.bin", b"the second attempt")  # the path is free again
    assert (Placed & {"k": 1}).fetch1("placed").read() == b"the second attempt"


def test_a_dead_writer_s_path_replaced_by_other_software_is_never_reclaimed(
    Placed, store, djstaged_postgres, djstaged_schema, child_path
):
    with child_writer(
        djstaged_postgres, djstaged_schema, store, 1, "acq/replaced.bin", "writer.place", "kill"
    ) as child:
        killed(child, djstaged_schema.connection)
    put(store, "acq/replaced.bin", b"copied there again by the acquisition software")
    report = dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False)
    (placements,) = [s for s in report.sections if s.section == "placements"]
    assert placements.collectable == {} and "replaced since" in placements.protected["acq/replaced.bin"]
    assert contents(store) == {"acq/replaced.bin": b"copied there again by the acquisition software"}


def test_a_paused_writer_s_placement_survives_a_collector_then_commits(
    Placed, store, djstaged_postgres, djstaged_schema, child_path
):
    with child_writer(djstaged_postgres, djstaged_schema, store, 1, "acq/paused.bin", "writer.place", "pause") as child:
        child.wait_paused("writer.place")
        report = dj_staged.gc.collect(
            djstaged_schema, store=store.name, grace=0, dry_run=False, now=time.time() + 86400
        )
        assert report.deleted == 0
        child.resume()
        assert child.join(timeout=120) == "committed"
    assert (Placed & {"k": 1}).fetch1("placed").read() == b"bytes of a writer that dies"


def test_a_lost_commit_reply_is_resolved_and_the_placed_file_kept(proxy, djstaged_schema, store):
    definition = DEFINITION.format(store=store.name)
    connection = connect_datajoint_through(proxy)
    try:
        through = dj.Schema(djstaged_schema.database, connection=connection, create_schema=False)
        ours = through(type("Placed", (dj.Manual,), {"definition": definition}))
        table = declare(djstaged_schema, "Placed", definition)
        proxy.drop_reply_after(COMMIT_GUARD_TAG)
        with pytest.warns(dj_staged.CommitRecoveredWarning):
            stage(ours, 1, "acq/doubt.bin", b"committed, its reply lost")
        report = dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False)
        assert report.deleted == 0 and report.errors == []
        assert (table & {"k": 1}).fetch1("placed").read() == b"committed, its reply lost"
        assert store_files(store, leases=True) == ["acq/doubt.bin"]
    finally:
        connection.close()


def test_the_collector_never_looks_at_the_rest_of_the_filepath_area(LocalPlaced, djstaged_local_store, djstaged_schema):
    for path in ("subject01/old.bin", "subject02/session/x.dat", "loose.txt"):
        put(djstaged_local_store, path, b"not dj-staged's")
    stage(LocalPlaced, 1, "subject01/new.bin", b"staged")
    report = dj_staged.gc.collect(djstaged_schema, store="main", grace=0, dry_run=False, now=time.time() + 365 * 86400)
    assert report.deleted == 0
    assert sorted(store_files(djstaged_local_store, leases=True)) == [
        "loose.txt",
        "subject01/new.bin",
        "subject01/old.bin",
        "subject02/session/x.dat",
    ]
