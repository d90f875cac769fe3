"""``staged_insert1(Table, resume=True)``: a write cut off goes on from its durable prefix (issue #27).

Each killed attempt runs in a child process (tests/support/resuming.py) that SIGKILLs itself once the last
durable unit its bytes reach is recorded, so where the next attempt goes on (``f.tell()``) is known exactly.
The next attempt resumes in the test's process, and its row is compared with a plain staged insert of the
same bytes: every byte, and every metadata field (the path's random token and ``<object@>``'s timestamp aside;
a hash-addressed value is equal as a whole). Local files use a small durable unit (``DJ_STAGED_PART_SIZE``);
S3 takes parts of 5 MiB at least, so its payload is two parts and a bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import warnings

import datajoint as dj
import numpy as np
import pytest
from support import resuming
from support.child import ChildDied, PausableChild
from support.paths import TEST_PYTHONPATH
from support.resumed import check_identical, incomplete_uploads, stored_value, wait_for_the_killed_session
from support.resuming import Durable
from support.stores import lease_files, store_files
from support.tables import declare

import dj_staged
import dj_staged.gc
from dj_staged import steps
from dj_staged.addressing import hashed
from dj_staged.codecs.blob import array_header
from dj_staged.errors import ResumeKeyTakenError, ResumeRestartedWarning, StagedInsertError
from dj_staged.gc.policy import RESUMABLE
from dj_staged.stores import resolve_store

UNIT = 64 << 10  # DJ_STAGED_PART_SIZE in these tests: a local store's durable unit
S3_UNIT = 5 << 20  # S3's smallest part, to which a smaller DJ_STAGED_PART_SIZE is raised
CODECS = {  # codec family -> (type, extension)
    "object": ("object", ".bin"),
    "hash": ("hash", ".bin"),
    "blob": ("blob", ".bin"),
}
LOCAL_SIZE = 5 * UNIT + 1234
LOCAL_OFFSETS = [
    0,
    1,
    4096,
    UNIT - 1,
    UNIT,  # exactly at a boundary
    UNIT + 1,
    2 * UNIT - 1,
    2 * UNIT,
    2 * UNIT + 777,
    3 * UNIT - 1,
    3 * UNIT,
    3 * UNIT + UNIT // 2,  # inside a unit
    4 * UNIT - 1,
    4 * UNIT,
    4 * UNIT + 1,
    5 * UNIT - 1,
    5 * UNIT,
    5 * UNIT + 1,
    LOCAL_SIZE - 1,
    LOCAL_SIZE,  # every byte written, the handle not closed
    None,  # the handle closed: the object is complete, the block killed before its commit
]
S3_SIZE = 2 * S3_UNIT + 300_000
S3_OFFSETS = [1, S3_UNIT, S3_UNIT + 1, S3_UNIT + S3_UNIT // 2, 2 * S3_UNIT, S3_SIZE, None]
RESUMABLE_STORES = {
    "local": "djstaged_local_store",
    "s3": "djstaged_s3_store",
    "gcs": "djstaged_gcs_store",
    "azure": "djstaged_azure_store",
}
GCS_UNIT = 256 << 10  # a GCS resumable upload's chunk is a multiple of 256 KiB


@pytest.fixture(autouse=True)
def small_units(monkeypatch):
    monkeypatch.setenv("DJ_STAGED_PART_SIZE", str(UNIT))
    monkeypatch.setenv("PYTHONPATH", ":".join(TEST_PYTHONPATH))  # the children import support/resuming.py
    # fake-gcs-server completes an upload session asked for its offset: trust the checkpoint there
    monkeypatch.setenv("DJ_STAGED_GCS_SESSION_QUERY", "0")


@pytest.fixture(params=list(RESUMABLE_STORES))
def resumable_store(request):
    """Every store: the local store ``main``, the S3 store ``s3`` (moto), the GCS store ``gcs`` (fake-gcs-server)
    and the Azure store ``azure`` (Azurite)."""
    return request.getfixturevalue(RESUMABLE_STORES[request.param])


def payload(size: int, seed: int = 27) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def unit_of(store) -> int:
    return {"s3": S3_UNIT, "gcs": GCS_UNIT}.get(store.spec["protocol"], UNIT)


def definition(codec: str, store) -> str:
    return f"k : int32\n---\nv : <{codec}@{store.name}>"


def options_for(codec: str, data: bytes) -> dict:
    return {"size": len(data)} if codec == "blob" else {}


def prefix_of(table, ext: str, options: dict) -> int:
    """Bytes the codec stores before the content (a blob header), as a handle of the same field says."""
    with pytest.raises(RuntimeError), dj_staged.staged_insert1(table) as staged:
        staged.rec["k"] = 99
        offset = staged.open("v", ext, **options).content_offset
        raise RuntimeError("only asked")
    return offset


def expected_start(kill_at: int | None, data: bytes, prefix: int, unit: int) -> int:
    """Where the next attempt goes on: the last durable unit the killed one reached, in the content."""
    if kill_at is None:
        return len(data)
    stored = prefix + kill_at
    boundary = stored - stored % unit
    return boundary - prefix if boundary else 0


def resume(table, ext: str, options: dict, data: bytes) -> int:
    """Resume row ``k = 1`` and write the rest of ``data``; where the handle began."""
    with dj_staged.staged_insert1(table, resume=True) as staged:
        staged.rec["k"] = resuming.KEY
        with staged.open("v", ext, **options) as f:
            began = f.tell()
            f.write(data[began:])
    return began


def kill_and_resume(djstaged_postgres, djstaged_schema, store, codec: str, kill_at: int | None, size: int) -> None:
    kind, ext = CODECS[codec]
    table = declare(djstaged_schema, "Resumed", definition(kind, store))
    data = payload(size)
    options = options_for(codec, data)
    prefix = prefix_of(table, ext, options) if codec == "blob" else 0
    child = PausableChild(
        resuming.killed_writer,
        dataclasses.asdict(djstaged_postgres),
        dict(dj.config.stores),
        djstaged_schema.database,
        definition(kind, store),
        ext,
        options,
        data,
        kill_at,
    )
    with child, pytest.raises(ChildDied) as died:
        child.join(timeout=120)
    assert died.value.exitcode == -9
    assert len(table()) == 0
    wait_for_the_killed_session(table)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeRestartedWarning)  # nothing was lost: no restart
        began = resume(table, ext, options, data)
    assert began == expected_start(kill_at, data, prefix, unit_of(store))
    check_identical(table, codec, data, store, ext, options)


@pytest.mark.parametrize("kill_at", LOCAL_OFFSETS)
@pytest.mark.parametrize("codec", ["object", "hash"])
def test_killed_at_an_offset_resumes_to_the_same_row_locally(
    codec, kill_at, djstaged_postgres, djstaged_schema, djstaged_local_store
):
    kill_and_resume(djstaged_postgres, djstaged_schema, djstaged_local_store, codec, kill_at, LOCAL_SIZE)


@pytest.mark.parametrize("kill_at", [UNIT - 1, 2 * UNIT + 777, 4 * UNIT, LOCAL_SIZE, None])
def test_killed_blob_with_a_declared_size_resumes_locally(
    kill_at, djstaged_postgres, djstaged_schema, djstaged_local_store
):
    kill_and_resume(djstaged_postgres, djstaged_schema, djstaged_local_store, "blob", kill_at, LOCAL_SIZE)


@pytest.mark.parametrize("kill_at", S3_OFFSETS)
@pytest.mark.parametrize("codec", ["object", "hash"])
def test_killed_at_an_offset_resumes_to_the_same_row_on_s3(
    codec, kill_at, djstaged_postgres, djstaged_schema, djstaged_s3_store
):
    kill_and_resume(djstaged_postgres, djstaged_schema, djstaged_s3_store, codec, kill_at, S3_SIZE)


CLOUD_OFFSETS = [1, UNIT, UNIT + 1, 3 * UNIT + UNIT // 2, LOCAL_SIZE, None]
GCS_SIZE = 3 * GCS_UNIT + 1234
GCS_OFFSETS = [1, GCS_UNIT, GCS_UNIT + 1, 2 * GCS_UNIT + GCS_UNIT // 2, GCS_SIZE, None]


@pytest.mark.parametrize("kill_at", GCS_OFFSETS)
@pytest.mark.parametrize("codec", ["object", "hash"])
def test_killed_at_an_offset_resumes_to_the_same_row_on_gcs(
    codec, kill_at, djstaged_postgres, djstaged_schema, djstaged_gcs_store
):
    kill_and_resume(djstaged_postgres, djstaged_schema, djstaged_gcs_store, codec, kill_at, GCS_SIZE)


@pytest.mark.parametrize("kill_at", CLOUD_OFFSETS)
@pytest.mark.parametrize("codec", ["object", "hash"])
def test_killed_at_an_offset_resumes_to_the_same_row_on_azure(
    codec, kill_at, djstaged_postgres, djstaged_schema, djstaged_azure_store
):
    kill_and_resume(djstaged_postgres, djstaged_schema, djstaged_azure_store, codec, kill_at, LOCAL_SIZE)


# ---- in one process: interruptions, the caller's errors, a changed prefix, a second resumer, the collector


def interrupted(table, ext: str, data: bytes, upto: int) -> int:
    """A first attempt interrupted by ``KeyboardInterrupt`` once ``data[:upto]`` is written and its last durable
    unit recorded; the offset a resume goes on from."""
    durable = Durable()
    with steps.observe("writer.checkpoint", durable), pytest.raises(KeyboardInterrupt):
        with dj_staged.staged_insert1(table, resume=True) as staged:
            staged.rec["k"] = resuming.KEY
            with staged.open("v", ext) as f:
                f.write(data[:upto])
                boundary = upto - upto % f.unit
                assert durable.wait_for(boundary)
                raise KeyboardInterrupt
    return boundary


def setting(djstaged_schema, store, codec: str = "object") -> tuple:
    kind, ext = CODECS[codec]
    table = declare(djstaged_schema, "Resumed", definition(kind, store))
    unit = unit_of(store)
    return table, ext, payload(2 * unit + unit // 2), unit


@pytest.mark.parametrize("codec", ["object", "hash"])
def test_keyboard_interrupt_keeps_the_durable_prefix(codec, djstaged_schema, resumable_store):
    table, ext, data, unit = setting(djstaged_schema, resumable_store, codec)
    assert interrupted(table, ext, data, 2 * unit + 10) == 2 * unit
    assert lease_files(resumable_store) != []  # kept for the next attempt
    assert resume(table, ext, {}, data) == 2 * unit
    check_identical(table, codec, data, resumable_store, ext)


@pytest.mark.parametrize("codec", ["object", "hash"])
def test_an_error_in_the_callers_code_reclaims_at_once(codec, djstaged_schema, resumable_store):
    table, ext, data, unit = setting(djstaged_schema, resumable_store, codec)
    durable = Durable()
    with steps.observe("writer.checkpoint", durable), pytest.raises(RuntimeError, match="bad frame"):
        with dj_staged.staged_insert1(table, resume=True) as staged:
            staged.rec["k"] = resuming.KEY
            with staged.open("v", ext) as f:
                f.write(data[: unit + 5])
                assert durable.wait_for(unit)
                raise RuntimeError("bad frame")
    assert len(table()) == 0
    assert store_files(resumable_store, leases=True) == []
    assert incomplete_uploads(resumable_store) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeRestartedWarning)
        assert resume(table, ext, {}, data) == 0
    check_identical(table, codec, data, resumable_store, ext)


def only_object(store) -> str:
    (path,) = store_files(store)
    return path


@pytest.mark.parametrize("codec", ["object", "hash"])
def test_a_changed_local_prefix_starts_over_with_a_warning(codec, djstaged_schema, djstaged_local_store):
    table, ext, data, unit = setting(djstaged_schema, djstaged_local_store, codec)
    interrupted(table, ext, data, 2 * unit + 10)
    with open(os.path.join(djstaged_local_store.spec["location"], only_object(djstaged_local_store)), "r+b") as f:
        f.seek(2 * unit - 1)
        f.write(bytes([data[2 * unit - 1] ^ 0xFF]))  # someone touched the last durable unit
    with pytest.warns(ResumeRestartedWarning, match="changed since they were made durable"):
        assert resume(table, ext, {}, data) == 0
    check_identical(table, codec, data, djstaged_local_store, ext)


@pytest.fixture(params=[name for name in RESUMABLE_STORES if name != "gcs"])
def store_asked_its_prefix(request):
    """Every store whose emulator can be asked what it holds: not fake-gcs-server, which completes a session asked
    for its offset (so these tests do not ask it; see above), and so cannot show a lost session."""
    return request.getfixturevalue(RESUMABLE_STORES[request.param])


@pytest.mark.parametrize("codec", ["object", "hash"])
def test_a_missing_prefix_starts_over_with_a_warning(codec, djstaged_schema, store_asked_its_prefix):
    resumable_store = store_asked_its_prefix
    table, ext, data, unit = setting(djstaged_schema, resumable_store, codec)
    interrupted(table, ext, data, 2 * unit + 10)
    staged_store = resolve_store(resumable_store.name, dj.config)
    if staged_store.supports_listing_incomplete_uploads:  # the parts of the upload, aborted by someone
        for upload in staged_store.incomplete_uploads("").values():
            staged_store.abort_upload(upload)
    else:
        staged_store.remove(only_object(resumable_store))
    with pytest.warns(ResumeRestartedWarning, match="gone"):
        assert resume(table, ext, {}, data) == 0
    check_identical(table, codec, data, resumable_store, ext)


def test_a_second_resumer_is_refused_naming_the_holder(djstaged_postgres, djstaged_schema, resumable_store):
    table, ext, data, unit = setting(djstaged_schema, resumable_store)
    assert interrupted(table, ext, data, unit + 1) == unit
    holder = PausableChild(
        resuming.holding_writer,
        dataclasses.asdict(djstaged_postgres),
        dict(dj.config.stores),
        djstaged_schema.database,
        definition("object", resumable_store),
        ext,
        data,
    )
    with holder:
        holder.wait_paused("holding")
        with pytest.raises(ResumeKeyTakenError, match=f"process {holder.pid}, database session"):
            with dj_staged.staged_insert1(table, resume=True) as staged:
                staged.rec["k"] = resuming.KEY
                staged.open("v", ext)
        holder.resume()
        assert holder.join(timeout=120) == unit  # the holder lost nothing
    check_identical(table, "object", data, resumable_store, ext)


def test_a_batch_refuses_resume(djstaged_schema, djstaged_local_store):
    table, _, _, _ = setting(djstaged_schema, djstaged_local_store)
    with pytest.raises(StagedInsertError, match="staged_insert refuses resume=True"):
        dj_staged.staged_insert(table, resume=True)


# ---- the collector: the resume window, and a takeover while it collects


def kept_for_resumption(report) -> list[str]:
    return sorted(root for s in report.sections for root, why in s.protected.items() if why == RESUMABLE)


def test_a_collector_keeps_an_interrupted_write_within_its_window(djstaged_schema, resumable_store):
    table, ext, data, unit = setting(djstaged_schema, resumable_store)
    interrupted(table, ext, data, unit + 1)
    report = dj_staged.gc.collect(
        djstaged_schema, store=resumable_store.name, grace=0, resume_window=3600, dry_run=False
    )
    assert report.errors == []
    assert sum(s.deleted for s in report.sections) == 0
    staged_store = resolve_store(resumable_store.name, dj.config)
    hidden = staged_store.supports_partial_uploads and not staged_store.supports_listing_incomplete_uploads
    # the lease, and the object or its upload, where the service shows an upload (a GCS session it does not)
    assert len(kept_for_resumption(report)) == (1 if hidden else 2)
    assert resume(table, ext, {}, data) == unit
    check_identical(table, "object", data, resumable_store, ext)


def test_a_collector_reclaims_an_interrupted_write_past_its_window(djstaged_schema, resumable_store):
    table, ext, data, unit = setting(djstaged_schema, resumable_store)
    interrupted(table, ext, data, unit + 1)
    report = dj_staged.gc.collect(
        djstaged_schema, store=resumable_store.name, grace=0, resume_window=60, now=time.time() + 3600, dry_run=False
    )
    assert report.errors == []
    assert kept_for_resumption(report) == []
    assert store_files(resumable_store, leases=True) == []
    assert incomplete_uploads(resumable_store) == []
    assert resume(table, ext, {}, data) == 0  # nothing left to resume: a fresh write
    check_identical(table, "object", data, resumable_store, ext)


@pytest.mark.parametrize("codec", ["object", "hash"])
def test_a_takeover_is_never_collected(codec, djstaged_postgres, djstaged_schema, resumable_store):
    """The resumer is stopped at ``writer.takeover``: the earlier attempt's paths are in its live lease, the
    earlier lease not yet removed. A collector whose window has passed for the earlier write keeps them."""
    kind, _ = CODECS[codec]
    table, ext, data, unit = setting(djstaged_schema, resumable_store, codec)
    assert interrupted(table, ext, data, unit + 1) == unit
    resumer = PausableChild(
        resuming.holding_writer,
        dataclasses.asdict(djstaged_postgres),
        dict(dj.config.stores),
        djstaged_schema.database,
        definition(kind, resumable_store),
        ext,
        data,
        "writer.takeover",
    )
    with resumer:
        resumer.wait_paused("writer.takeover")
        report = dj_staged.gc.collect(
            djstaged_schema, store=resumable_store.name, grace=0, resume_window=0, now=time.time() + 3600, dry_run=False
        )
        assert report.errors == []
        assert sum(s.deleted for s in report.sections if s.section != "leases") == 0
        resumer.resume()
        assert resumer.join(timeout=120) == unit
    check_identical(table, codec, data, resumable_store, ext)


def test_the_md5_state_restores_to_hashlibs_digest():
    from dj_staged.addressing.md5state import ResumableMD5, available

    assert available()
    data = payload(300_000)
    first = ResumableMD5()
    first.update(data[:123_457])
    second = ResumableMD5.from_state(first.state())
    second.update(data[123_457:])
    assert second.digest() == hashlib.md5(data).digest()
    with pytest.raises(ValueError, match="layout"):
        ResumableMD5.from_state("sha1-ctx:AAAA")


def test_a_resumer_that_cannot_restore_an_md5_state_reads_the_value_once(djstaged_schema, resumable_store, monkeypatch):
    """A resume on a machine whose OpenSSL lacks MD5's functions (``available()`` False) still goes on from the
    durable prefix; the hash then comes from one read of the whole stored value when the block ends."""
    table, ext, data, unit = setting(djstaged_schema, resumable_store, "hash")
    interrupted(table, ext, data, 2 * unit + 10)
    monkeypatch.setattr(hashed, "available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeRestartedWarning)
        assert resume(table, ext, {}, data) == 2 * unit
    check_identical(table, "hash", data, resumable_store, ext)


def test_a_prefix_written_without_an_md5_state(djstaged_schema, resumable_store, monkeypatch):
    """The attempt cut off could not save its MD5 state: a local file's prefix is read once to rebuild it; an object
    store's cannot be read back before the object is complete, so the write starts over, saying why."""
    table, ext, data, unit = setting(djstaged_schema, resumable_store, "hash")
    with monkeypatch.context() as without:
        without.setattr(hashed, "available", lambda: False)
        interrupted(table, ext, data, 2 * unit + 10)
    if resolve_store(resumable_store.name, dj.config).durable_local_files:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResumeRestartedWarning)
            assert resume(table, ext, {}, data) == 2 * unit
    else:
        with pytest.warns(ResumeRestartedWarning, match="MD5 state was not recorded"):
            assert resume(table, ext, {}, data) == 0
    check_identical(table, "hash", data, resumable_store, ext)


def test_open_blob_array_resumes_at_the_first_column_not_yet_durable(djstaged_schema, djstaged_local_store):
    table = declare(djstaged_schema, "Resumed", definition("blob", djstaged_local_store))
    array = np.arange(3 * 40_000, dtype="float64").reshape(3, 40_000)  # a column: 24 bytes; 960,000 bytes in all
    durable = Durable()
    with steps.observe("writer.checkpoint", durable), pytest.raises(KeyboardInterrupt):
        with dj_staged.staged_insert1(table, resume=True) as staged:
            staged.rec["k"] = resuming.KEY
            writer = dj_staged.open_blob_array(staged, "v", array.shape, array.dtype)
            writer.write(array[:, :20_000])  # 480,000 bytes after the header: 7 units are durable
            assert durable.wait_for(7 * UNIT)
            raise KeyboardInterrupt
    with dj_staged.staged_insert1(table, resume=True) as staged:
        staged.rec["k"] = resuming.KEY
        with dj_staged.open_blob_array(staged, "v", array.shape, array.dtype) as writer:
            began = writer.filled
            for start in range(began, array.shape[1], 7_000):
                writer.write(array[:, start : start + 7_000])
    header = len(array_header(array.shape, array.dtype))  # the blob header stored before the content
    assert began == (7 * UNIT - header) // 24  # the first column not wholly durable
    np.testing.assert_array_equal((table & {"k": resuming.KEY}).fetch1("v"), array)
    with dj_staged.staged_insert1(table) as staged:
        staged.rec["k"] = 2
        with dj_staged.open_blob_array(staged, "v", array.shape, array.dtype) as writer:
            writer.write(array)
    assert stored_value(table, 1) == stored_value(table, 2)


def test_open_blob_array_interrupted_in_its_with_block_keeps_its_prefix(djstaged_schema, resumable_store):
    """Interrupted inside ``with open_blob_array(...)``: the writer's exit must not complete the partial object
    (a takeover would find it complete, short, and refuse the rest); the next attempt goes on from the prefix."""
    table = declare(djstaged_schema, "Resumed", definition("blob", resumable_store))
    unit = unit_of(resumable_store)
    array = np.frombuffer(payload(4 * (2 * unit + unit // 2)), "uint8").reshape(4, -1)
    header = len(array_header(array.shape, array.dtype))
    cut = (unit + 1000) // 4  # columns past the first durable unit
    durable = Durable()
    with steps.observe("writer.checkpoint", durable), pytest.raises(KeyboardInterrupt):
        with dj_staged.staged_insert1(table, resume=True) as staged:
            staged.rec["k"] = resuming.KEY
            with dj_staged.open_blob_array(staged, "v", array.shape, array.dtype) as writer:
                writer.write(array[:, :cut])
                assert durable.wait_for(unit)
                raise KeyboardInterrupt
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeRestartedWarning)
        with dj_staged.staged_insert1(table, resume=True) as staged:
            staged.rec["k"] = resuming.KEY
            with dj_staged.open_blob_array(staged, "v", array.shape, array.dtype) as writer:
                began = writer.filled
                writer.write(array[:, began:])
    assert began == (unit - header) // 4
    np.testing.assert_array_equal((table & {"k": resuming.KEY}).fetch1("v"), array)
    assert lease_files(resumable_store) == [] and incomplete_uploads(resumable_store) == []


def test_status_lists_an_interrupted_resumable_write(djstaged_schema, resumable_store):
    from dj_staged.status import RESUMABLE as RESUMABLE_WRITE
    from dj_staged.status import in_flight

    table, ext, data, unit = setting(djstaged_schema, resumable_store)
    interrupted(table, ext, data, unit + 1)
    status = in_flight(djstaged_schema.connection, stores=[resumable_store.name], schemas=[djstaged_schema.database])
    (write,) = [w for w in status.writes if w.field == "v"]
    assert (write.state, write.how, write.key, write.durable) == ("abandoned", RESUMABLE_WRITE, {"k": 1}, unit)
    assert write.resumable_until is not None and write.resumable_until > time.time()
    assert "abandoned (resumable)" in status.format()


@pytest.mark.parametrize("codec", ["object", "hash"])
def test_a_resume_on_s3_sends_only_what_was_not_durable(codec, djstaged_schema, djstaged_s3_store):
    """Killed after two of three parts, the resume uploads one part, downloads nothing (the MD5 state is
    restored, not re-read), and completes the upload the first attempt began."""
    from support.stores import s3_calls

    table, ext, data, unit = setting(djstaged_schema, djstaged_s3_store, codec)
    assert interrupted(table, ext, data, 2 * unit + 10) == 2 * unit
    with s3_calls(djstaged_s3_store) as (calls, downloaded):
        assert resume(table, ext, {}, data) == 2 * unit
    assert calls["UploadPart"] == 1 and calls["CreateMultipartUpload"] == 0 and calls["CompleteMultipartUpload"] == 1
    # besides: PutObject of the lease's small files (its header, the checkpoints), CopyObject of a promotion
    assert downloaded == [] or sum(downloaded) < 64 << 10  # lease files read back, never the content
    check_identical(table, codec, data, djstaged_s3_store, ext)


def test_gc_abandon_drops_one_interrupted_write_on_purpose(djstaged_schema, djstaged_local_store, capsys):
    from dj_staged.cli import main
    from dj_staged.status import in_flight

    table, ext, data, unit = setting(djstaged_schema, djstaged_local_store)
    interrupted(table, ext, data, unit + 1)
    schema = ["--schema", djstaged_schema.database, "--store", djstaged_local_store.name]
    assert main(["gc", *schema, "--delete"]) == 0  # the default window: kept
    capsys.readouterr()
    assert lease_files(djstaged_local_store) != [] and store_files(djstaged_local_store) != []
    (write,) = in_flight(djstaged_schema.connection, schemas=[djstaged_schema.database]).writes
    assert main(["gc", *schema, "--abandon", "no-such-lease"]) == 1
    assert "no interrupted resumable write has lease no-such-lease" in capsys.readouterr().out
    assert main(["gc", *schema, "--abandon", write.lease_id, "--delete"]) == 0
    assert f"lease {write.lease_id} of {djstaged_schema.database} abandoned on purpose" in capsys.readouterr().out
    assert store_files(djstaged_local_store, leases=True) == []
    assert resume(table, ext, {}, data) == 0
    check_identical(table, "object", data, djstaged_local_store, ext)
