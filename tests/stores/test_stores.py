"""The store layer: every store DataJoint supports, through one interface, and nothing else asking which it is.

Each store runs against its real service on 127.0.0.1 (a folder, moto's S3 server, fake-gcs-server, Azurite);
the GCS and Azure stores are reached through a proxy that counts the bytes each way (tests/support/tcpcount.py),
the S3 store through botocore's own call events.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import datajoint as dj
import numpy as np
import pytest
from support.stores import s3_calls, store_files, traffic
from support.tables import declare

import dj_staged
import dj_staged.gc
from dj_staged.errors import UnsupportedBackendError
from dj_staged.stores import StagedStore, resolve_store, store_classes
from dj_staged.stores.azure import AzureStore
from dj_staged.stores.gcs import GCSStore
from dj_staged.stores.local import LocalStore
from dj_staged.stores.s3 import S3Store

PACKAGE = Path(dj_staged.__file__).parent
PROTOCOLS = {"file", "s3", "gcs", "azure"}
STORE_LIBRARIES = ("s3fs", "gcsfs", "adlfs", "azure", "botocore", "aiobotocore", "fsspec.implementations.local")
MIB = 1 << 20


def _outside_the_store_layer() -> list[Path]:
    """Every module of the package but the store layer's own and the kit's (which starts the emulators)."""
    skip = (PACKAGE / "stores", PACKAGE / "testing")
    return [path for path in sorted(PACKAGE.rglob("*.py")) if not any(path.is_relative_to(s) for s in skip)]


def test_nothing_outside_the_store_layer_asks_which_protocol_a_store_speaks():
    """No ``.protocol`` read, no protocol name compared, no storage library imported, outside ``stores/``."""
    found = []
    for path in _outside_the_store_layer():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "protocol":
                found.append(f"{where}:{node.lineno} reads .protocol")
            if isinstance(node, ast.Compare):
                names = [c.value for c in (node.left, *node.comparators) if isinstance(c, ast.Constant)]
                if PROTOCOLS & {n for n in names if isinstance(n, str)}:
                    found.append(f"{where}:{node.lineno} compares with a protocol's name")
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m == lib or m.startswith(lib + ".") for m in modules for lib in STORE_LIBRARIES):
                    found.append(f"{where}:{node.lineno} imports {modules}")
    assert found == []


def test_the_check_above_finds_a_protocol_branch(tmp_path):
    """The check is not vacuous: the branches the store layer replaced would be found."""
    tree = ast.parse('if backend.protocol == "s3":\n    import s3fs\n')
    kinds = {type(node).__name__ for node in ast.walk(tree)}
    assert {"Attribute", "Compare", "Import"} <= kinds
    assert any(isinstance(n, ast.Attribute) and n.attr == "protocol" for n in ast.walk(tree))


def test_each_protocol_has_its_store_and_declares_its_capabilities():
    assert {name: store_classes()[name] for name in PROTOCOLS} == {
        "file": LocalStore,
        "s3": S3Store,
        "gcs": GCSStore,
        "azure": AzureStore,
    }
    table = {cls.protocol: cls.capabilities() for cls in (LocalStore, S3Store, GCSStore, AzureStore)}
    assert all(caps["supports_server_side_copy"] for caps in table.values())
    assert [p for p, caps in table.items() if caps["durable_local_files"]] == ["file"]
    assert [p for p, caps in table.items() if caps["supports_listing_incomplete_uploads"]] == ["s3", "azure"]
    assert [p for p, caps in table.items() if caps["supports_partial_uploads"]] == ["s3", "gcs", "azure"]
    assert table["s3"]["server_side_copy_limit"] == 5 << 30 and table["s3"]["delete_batch_size"] == 1000
    assert table["gcs"]["reclaims_by_itself"] and table["azure"]["reclaims_by_itself"]
    assert set(StagedStore.capabilities()) == set(table["file"])


def test_one_store_per_specification(store):
    first = resolve_store(store.name, dj.config)
    assert resolve_store(store.name, dj.config) is first
    assert first.name == store.name and first.spec["protocol"] == store.protocol
    assert resolve_store(None, dj.config) is first  # the fixture's store is also stores.default


def test_a_protocol_without_a_store_is_refused_before_anything_is_written(djstaged_schema, djstaged_stores, tmp_path):
    """A DataJoint storage plugin (``unsupported``, tests/entry_points) works with DataJoint's own insert1; a
    staged insert refuses it at the first handle, naming the protocol and the supported ones."""
    location = tmp_path / "plugin-store"
    location.mkdir()
    djstaged_stores["plain"] = {"protocol": "unsupported", "location": str(location)}
    djstaged_stores["default"] = "plain"
    dj.config.stores = djstaged_stores
    Table = declare(djstaged_schema, "Plain", "item_id : int32\n---\ncontent : <hash@plain>")
    Table.insert1({"item_id": 1, "content": b"through DataJoint"})
    before = sorted(p for p in location.rglob("*") if p.is_file())
    with pytest.raises(UnsupportedBackendError, match="'unsupported'.*supported: azure, faulty, file, gcs, s3"):
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["item_id"] = 2
            staged.open("content", ".bin")
    assert sorted(p for p in location.rglob("*") if p.is_file()) == before
    assert len(Table()) == 1 and (Table & {"item_id": 1}).fetch1("content") == b"through DataJoint"


@pytest.fixture
def Content(djstaged_schema, store):
    return declare(djstaged_schema, "Content", f"item_id : int32\n---\ncontent : <hash@{store.name}>")


@pytest.mark.parametrize("store", ["gcs", "azure"], indirect=True)
def test_promotion_copies_inside_the_service(Content, store):
    """A staged value's promotion to its canonical path downloads nothing (GCS rewrite, Azure Copy Blob)."""
    data = os.urandom(12 * MIB)
    with traffic(store) as counts, dj_staged.staged_insert1(Content) as staged:
        staged.rec["item_id"] = 1
        with staged.open("content", ".bin") as f:
            f.write(data)
    assert counts["uploaded"] >= len(data)  # the counting sees the traffic
    assert counts["downloaded"] < MIB
    (value,) = Content.connection.query(f"SELECT content FROM {Content.full_table_name}").fetchone()
    assert store_files(store) == [value["path"]]  # promoted, and no staging copy left
    assert (Content & {"item_id": 1}).fetch1("content") == data


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_promotion_copies_inside_s3(Content, store, djstaged_s3_store):
    data = os.urandom(12 * MIB)
    with s3_calls(djstaged_s3_store) as (calls, downloaded), dj_staged.staged_insert1(Content) as staged:
        staged.rec["item_id"] = 1
        with staged.open("content", ".bin") as f:
            f.write(data)
    assert calls["CopyObject"] == 1 and sum(downloaded) == 0
    assert (Content & {"item_id": 1}).fetch1("content") == data


def test_rows_that_datajoints_insert1_wrote_are_kept_by_gc(djstaged_schema, store):
    Table = declare(
        djstaged_schema, "Plain", f"item_id : int32\n---\nblob : <blob@{store.name}>\nfile : <object@{store.name}>"
    )
    array = np.arange(1000.0)
    Table.insert1({"item_id": 1, "blob": array, "file": b"an object written by insert1"})
    before = store_files(store)
    report = dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0, dry_run=False)
    assert report.errors == [] and sum(s.deleted for s in report.sections) == 0
    assert store_files(store) == before
    row = (Table & {"item_id": 1}).fetch1()
    np.testing.assert_array_equal(row["blob"], array)
    assert row["file"].read() == b"an object written by insert1"


def test_an_interrupted_azure_upload_is_reclaimed_by_gc(djstaged_schema, djstaged_azure_store):
    """A block interrupted mid-write leaves blocks that were never committed; gc lists and removes them."""
    Table = declare(djstaged_schema, "Big", "item_id : int32\n---\ncontent : <hash@azure>")
    with pytest.raises(KeyboardInterrupt), dj_staged.staged_insert1(Table) as staged:
        staged.rec["item_id"] = 1
        f = staged.open("content", ".bin")
        f.write(os.urandom(9 * MIB))  # more than one block: staged, not committed
        f.flush()
        raise KeyboardInterrupt
    store = resolve_store("azure", dj.config)
    (upload,) = store.incomplete_uploads("").values()
    assert upload.path.startswith(f"_staging/{djstaged_schema.database}/") and upload.size >= 8 * MIB
    report = dj_staged.gc.collect(djstaged_schema, store="azure", grace=0, dry_run=False)
    assert report.section("uploads").deleted == 1 and report.errors == []
    assert store.incomplete_uploads("") == {}
    assert store_files(djstaged_azure_store, leases=True) == []


def test_gc_says_what_the_service_reclaims_by_itself(djstaged_schema, store):
    report = dj_staged.gc.collect(djstaged_schema, store=store.name, grace=0)
    wanted = resolve_store(store.name, dj.config).reclaims_by_itself
    notes = [note for note in report.notes if "reclaims by itself" in note]
    assert notes == ([f"store {store.name}: the service reclaims by itself: {wanted}"] if wanted else [])


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == "":
        return "—"
    if isinstance(value, int):
        return f"{value // (1 << 30)} GiB" if value >= 1 << 30 else f"{value:,}"
    return str(value)


def test_the_readmes_store_table_is_the_declared_capabilities():
    lines = (PACKAGE.parents[1] / "README.md").read_text().splitlines()
    start = lines.index("| capability | `file` | `s3` | `gcs` | `azure` |")
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].rsplit("(`", 1)[1].rstrip("`)")] = cells[1:]
    classes = [LocalStore, S3Store, GCSStore, AzureStore]
    assert set(rows) == set(LocalStore.capabilities())
    for name, cells in rows.items():
        for cls, cell in zip(classes, cells, strict=True):
            assert cell.startswith(_shown(cls.capabilities()[name])), (name, cls.protocol, cell)


def test_a_blob_committed_after_the_collector_listed_it_as_incomplete_is_kept(
    djstaged_schema, djstaged_azure_store, elsewhere
):
    """Azure: the collector lists a blob whose blocks are not committed yet (a large write in flight); the writer
    then commits it and its row, and releases its lease, before the collector reads the leases. Aborting that
    "upload" would delete the row's blob: the row's reference keeps it."""
    import threading

    from support.races import Party, Pause

    Table = declare(djstaged_schema, "Big", "item_id : int32\n---\nraw : <object@azure>")
    data = os.urandom(9 * MIB)  # more than one 8 MiB block: staged before the commit
    staged_blocks, commit = threading.Event(), threading.Event()

    def write() -> None:
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["item_id"] = 1
            with staged.open("raw", ".bin") as f:
                f.write(data)
                f.flush()
                staged_blocks.set()
                assert commit.wait(60)

    writer = Party("writer", write)
    writer.start()
    assert staged_blocks.wait(60)
    store = resolve_store("azure", dj.config)
    assert len(store.incomplete_uploads("")) == 1
    pause = Pause("collector")
    with dj_staged.steps.observe("collector.list", pause):
        collector = Party("collector", dj_staged.gc.collect, elsewhere, store="azure", grace=0, dry_run=False)
        collector.start()
        pause.wait()  # the blob of uncommitted blocks is listed
        commit.set()
        writer.outcome()  # the blob committed, the row visible, the lease released
        pause.go()
        report = collector.outcome()
    assert report.errors == [] and report.section("uploads").deleted == 0
    assert (Table & {"item_id": 1}).fetch1("raw").read() == data
