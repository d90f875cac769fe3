"""``dj-staged status``: live and abandoned staged writes, read from the leases, locally and on S3."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

import datajoint as dj
import pytest
from datajoint.hash_registry import get_store_backend
from support.leases import foreign_lease
from support.stores import s3_listings
from support.tables import declare

import dj_staged
from dj_staged._datajoint import full_path
from dj_staged.cli import main
from dj_staged.status import ABANDONED, INTERRUPTED, LIVE, UNREADABLE, WRITER_GONE, in_flight
from dj_staged.stores import resolve_store
from dj_staged.text import human_bytes

pytestmark = pytest.mark.parametrize("djstaged_conformance_store", ["local", "s3", "gcs", "azure"], indirect=True)


@pytest.fixture
def Scan(djstaged_schema, djstaged_conformance_store):
    store = djstaged_conformance_store.name
    return declare(
        djstaged_schema, "Scan", f"scan_id : int32\n---\nframes : <object@{store}>\npayload : <blob@{store}>"
    )


def put(store, path: str, data: bytes) -> None:
    backend = get_store_backend(store.name)
    backend.fs.pipe_file(full_path(backend, path), data)


def start_upload(store, path: str, part: bytes) -> None:
    """An incomplete multipart upload holding one part: a large file still being written."""
    backend = get_store_backend(store.name)
    bucket, key = full_path(backend, path).split("/", 1)
    upload = backend.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    backend.fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=part)


def by_state(found) -> dict[tuple[str, str, str], object]:
    return {(w.state, w.field, json.dumps(w.key, sort_keys=True)): w for w in found.writes}


def test_status_shows_live_and_abandoned_writes(Scan, djstaged_conformance_store, djstaged_postgres, capsys):
    store = djstaged_conformance_store
    db = Scan.database
    began = time.time()
    with pytest.raises(KeyboardInterrupt), dj_staged.staged_insert1(Scan) as staged:  # abandoned
        staged.rec["scan_id"] = 2
        with staged.open("payload", ".bin") as f:
            f.write(b"a" * 100)
        raise KeyboardInterrupt
    gone = f"_staging/{db}/recording/blob_{uuid.uuid4().hex[:8]}.bin"  # another writer's, whose session ended
    if store.protocol == "s3":
        start_upload(store, gone, b"u" * 5000)  # S3 shows a file being written as an incomplete upload
    else:
        put(store, gone, b"u" * 5000)
    with foreign_lease(djstaged_postgres, store)(db, [gone], live=False):
        with dj_staged.staged_insert1(Scan) as staged:  # live: this block is paused here
            staged.rec["scan_id"] = 1
            fsmap = staged.store("frames", ".zarr")
            fsmap["zarr.json"] = b"{}"
            fsmap["c/0"] = b"x" * 1000
            with staged.open("payload", ".bin") as f:
                f.write(b"p" * 500)
            if store.protocol == "s3":
                with s3_listings(store) as listings:
                    found = in_flight(Scan.connection, stores=[store.name])
                leases = f"{store.spec['location']}/_staging/_leases/"
                assert listings[("ListObjectsV2", leases)] == 1  # one listing of every schema's leases
                assert all(n == 1 for n in listings.values()), listings  # no prefix twice
                data = {prefix for (op, prefix) in listings if op == "ListObjectsV2" and prefix != leases}
                assert len(data) == 2, listings  # one per data section with writes in flight (_schema/, _staging/)
            else:
                found = in_flight(Scan.connection, stores=[store.name])
            assert main(["status", "--store", store.name]) == 0
            text = capsys.readouterr().out
            assert main(["status", "--store", store.name, "--json", "--schema", db]) == 0
            as_json = json.loads(capsys.readouterr().out)
    writes = by_state(found)
    assert set(writes) == {
        (LIVE, "frames", '{"scan_id": 1}'),
        (LIVE, "payload", '{"scan_id": 1}'),
        (ABANDONED, "payload", '{"scan_id": 2}'),
        (ABANDONED, "blob", '{"recording_id": 99}'),
    }
    frames = writes[(LIVE, "frames", '{"scan_id": 1}')]
    assert (frames.files, frames.bytes) == (2, 1002)  # a directory value: its files so far
    assert (frames.schema, frames.table) == (db, Scan.table_name)
    assert (frames.host, frames.pid) == (socket.gethostname(), os.getpid())
    assert began <= frames.started <= time.time()  # the writer's clock
    assert abs(frames.last_update - frames.started) < 5  # the store's clock (whole seconds on S3)
    # <blob@>'s header: a placeholder in a local file, patched in place; framed at the end on an object store
    prefix = 13 if resolve_store(store.name, dj.config).durable_local_files else 0
    assert writes[(LIVE, "payload", '{"scan_id": 1}')].bytes == prefix + 500
    assert writes[(ABANDONED, "payload", '{"scan_id": 2}')].bytes == prefix + 100
    assert writes[(ABANDONED, "blob", '{"recording_id": 99}')].bytes == 5000
    assert found.bytes == 1002 + 5000 + 2 * prefix + 600
    assert found.summary() == (
        f"4 staged writes in 1 store ({store.name}): 2 live, 2 abandoned; "
        f"{human_bytes(found.bytes)} staged. "
        "What abandoned writes left is reclaimed by `dj-staged gc --delete`."
    )
    lines = text.splitlines()
    assert lines[0] == found.summary()  # the line a person reads first
    header = lines[2].split()
    assert header[:8] == ["store", "schema", "table", "field", "key", "host", "pid", "state"]
    assert sum("live" in line.split() for line in lines[3:]) == 2
    assert any("scan_id=1" in line and "1002 B (2 files)" in line for line in lines)
    assert writes[(ABANDONED, "payload", '{"scan_id": 2}')].how == INTERRUPTED
    assert writes[(ABANDONED, "blob", '{"recording_id": 99}')].how == WRITER_GONE
    assert any("scan_id=2" in line and "abandoned (interrupted)" in line for line in lines)
    assert any("recording_id=99" in line and "abandoned (writer gone)" in line for line in lines)
    assert any(line.split()[2:3] == ["Scan"] for line in lines[3:])  # the class name (its SQL name is "scan")
    assert as_json["states"] == {"abandoned": 2, "live": 2}
    assert {w["how"] for w in as_json["writes"]} == {"", INTERRUPTED, WRITER_GONE}
    assert {w["class_name"] for w in as_json["writes"]} == {"Scan", "Recording"}
    assert sorted(w["bytes"] for w in as_json["writes"]) == [prefix + 100, prefix + 500, 1002, 5000]
    assert {w["lease_id"] for w in as_json["writes"] if w["state"] == LIVE} == {frames.lease_id}
    after = in_flight(Scan.connection, stores=[store.name])  # the live block ended and removed its lease
    assert sorted(w.how for w in after.writes) == [INTERRUPTED, WRITER_GONE]


def test_status_with_nothing_in_flight_and_leases_it_cannot_judge(Scan, djstaged_conformance_store, capsys):
    store = djstaged_conformance_store
    assert main(["status", "--store", store.name]) == 0
    assert capsys.readouterr().out.strip() == f"No staged writes in flight in 1 store ({store.name})."
    put(store, f"_staging/_leases/{Scan.database}/{uuid.uuid4().hex}/lease.json", b"not json")
    put(store, f"_staging/_leases/elsewhere_{uuid.uuid4().hex[:6]}/{uuid.uuid4().hex}/lease.json", b"{}")
    found = in_flight(Scan.connection, stores=[store.name])
    assert [w.state for w in found.writes] == [UNREADABLE]
    (note,) = found.notes
    assert "leases of 1 schema this connection cannot list were left out (elsewhere_" in note


def test_status_errors_name_what_to_fix(Scan, djstaged_conformance_store, tmp_path, capsys):
    assert main(["status", "--store", "nowhere"]) == 2
    assert "store 'nowhere'" in capsys.readouterr().err
    dj.config.stores = {**dj.config.stores, "gone": {"protocol": "file", "location": str(tmp_path / "unmounted")}}
    assert main(["status", "--store", "gone"]) == 2  # djstaged_stores (under the store fixture) restores the stores
    err = capsys.readouterr().err
    assert err.startswith("dj-staged status: Store 'gone' is configured but cannot be used. Configured stores:")
    assert "FileNotFoundError: Inaccessible local directory" in err
    assert "Traceback" not in err
    assert main(["status", "--schema", "no_such_schema_here"]) == 2
    assert "'no_such_schema_here' does not exist" in capsys.readouterr().err
