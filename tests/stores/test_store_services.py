"""GCS (fake-gcs-server) and Azure Blob (Azurite) stores: DataJoint's own round trips and today's staged insert.

Each test runs on both emulators, started once per session on 127.0.0.1 by the
kit's fixtures; every test gets a fresh bucket or container. The stores are
configured with DataJoint's own keys only, so DataJoint builds gcsfs and adlfs
filesystems exactly as it would for the real services.
"""

from __future__ import annotations

import io
import json
import os
import urllib.request

import numpy as np
import pytest
import zarr
from datajoint.hash_registry import get_store_backend
from support.tables import declare

import dj_staged
from dj_staged.testing.inspection import column_value, content_hash, read_object, store_files

CLOUD = {"gcs": "djstaged_gcs_store", "azure": "djstaged_azure_store"}

#: More than gcsfs's 5 MiB write block: gcsfs sends it as several resumable-upload chunks.
LARGE = 12 << 20

#: More than twice adlfs's 50 MiB write block: adlfs stages several blocks before it commits the block list.
HUGE = 110 << 20


@pytest.fixture(params=sorted(CLOUD))
def cloud(request):
    """The test runs twice: on the GCS store ``gcs`` and on the Azure store ``azure``."""
    return request.getfixturevalue(CLOUD[request.param])


@pytest.fixture
def Item(djstaged_schema, cloud):
    return declare(
        djstaged_schema,
        "Item",
        f"""
        item_id : int32
        ---
        payload = null : <blob@{cloud.name}>
        raw = null : <object@{cloud.name}>
        waveform = null : <npy@{cloud.name}>
        """,
    )


def value(table, item_id: int, field: str) -> dict:
    """The column value as the database holds it, parsed."""
    raw = column_value(table, {"item_id": item_id}, field)
    return raw if isinstance(raw, dict) else json.loads(raw)


def npy_bytes(array: np.ndarray) -> bytes:
    """What ``np.save`` writes for ``array``."""
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def chunks(data: bytes, size: int = 1 << 20):
    return (data[start : start + size] for start in range(0, len(data), size))


def service_listing(store) -> list[str]:
    """Every object name in the store's bucket or container, asked of the emulator directly (no fsspec)."""
    spec = store.spec
    if spec["protocol"] == "gcs":
        endpoint = os.environ["STORAGE_EMULATOR_HOST"]
        with urllib.request.urlopen(f"{endpoint}/storage/v1/b/{spec['bucket']}/o", timeout=30) as response:
            return sorted(item["name"] for item in json.load(response).get("items", []))
    from azure.storage.blob import ContainerClient

    with ContainerClient.from_connection_string(spec["connection_string"], spec["container"]) as container:
        return sorted(blob.name for blob in container.list_blobs())


def test_datajoint_insert1_round_trip(Item, cloud, tmp_path):
    payload = {"trace": np.linspace(0, 1, 5000), "label": "cell 7"}
    source = tmp_path / "recording.bin"
    source.write_bytes(os.urandom(300_000))
    array = np.arange(60_000, dtype=np.float32).reshape(300, 200)
    Item.insert1({"item_id": 1, "payload": payload, "raw": source, "waveform": array})

    row = (Item & {"item_id": 1}).fetch1()
    assert row["payload"].keys() == payload.keys() and row["payload"]["label"] == "cell 7"
    np.testing.assert_array_equal(row["payload"]["trace"], payload["trace"])
    assert row["raw"].read() == source.read_bytes()
    np.testing.assert_array_equal(row["waveform"].load(), array)

    blob, obj, npy = (value(Item, 1, field) for field in ("payload", "raw", "waveform"))
    assert {blob["store"], obj["store"], npy["store"]} == {cloud.name}
    stored_blob = read_object(cloud.name, blob["path"])
    assert content_hash(stored_blob) == blob["hash"] and len(stored_blob) == blob["size"]
    assert read_object(cloud.name, obj["path"]) == source.read_bytes()
    assert read_object(cloud.name, npy["path"]) == npy_bytes(array)
    assert store_files(cloud.name) == sorted([blob["path"], obj["path"], npy["path"]])
    prefix = cloud.spec["location"] + "/"
    assert [name for name in service_listing(cloud) if not name.startswith(prefix + "_staging/")] == sorted(
        prefix + path for path in (blob["path"], obj["path"], npy["path"])
    )


@pytest.mark.parametrize("size", [LARGE, HUGE], ids=["12MiB", "110MiB"])
def test_staged_object_file(Item, cloud, size):
    data = os.urandom(size)
    with dj_staged.staged_insert1(Item) as staged:
        staged.rec["item_id"] = 1
        with staged.open("raw", ".bin") as f:
            for piece in chunks(data):
                f.write(piece)
    raw = (Item & {"item_id": 1}).fetch1("raw")
    assert raw.read() == data
    meta = value(Item, 1, "raw")
    assert meta["size"] == size and meta["ext"] == ".bin" and meta["is_dir"] is False
    assert read_object(cloud.name, meta["path"]) == data
    assert store_files(cloud.name) == [meta["path"]]


def test_staged_object_zarr_directory(Item, cloud):
    array = np.arange(40 * 30, dtype=np.int32).reshape(40, 30)
    with dj_staged.staged_insert1(Item) as staged:
        staged.rec["item_id"] = 1
        z = zarr.open(staged.store("raw", ".zarr"), mode="w", shape=array.shape, chunks=(10, 30), dtype=array.dtype)
        for start in range(0, 40, 10):
            z[start : start + 10] = array[start : start + 10]
    raw = (Item & {"item_id": 1}).fetch1("raw")
    assert raw.is_dir and raw.path.endswith(".zarr")
    np.testing.assert_array_equal(zarr.open_array(raw.fsmap, mode="r")[:], array)
    meta = value(Item, 1, "raw")
    files = [f for f in store_files(cloud.name) if f.startswith(raw.path + "/")]
    assert meta["item_count"] == len(files) == 5  # zarr.json and four chunks
    assert sum(get_store_backend(cloud.name).size(f) for f in files) == meta["size"]


def test_staged_npy_equals_insert1(Item, cloud):
    array = np.random.default_rng(3).normal(size=(512, 1024))
    Item.insert1({"item_id": 1, "waveform": array})
    with dj_staged.staged_insert1(Item) as staged:
        staged.rec["item_id"] = 2
        with staged.open("waveform", ".npy") as f:
            np.save(f, array, allow_pickle=False)
    ours, theirs = value(Item, 2, "waveform"), value(Item, 1, "waveform")
    assert {k: v for k, v in ours.items() if k != "path"} == {k: v for k, v in theirs.items() if k != "path"}
    assert read_object(cloud.name, ours["path"]) == read_object(cloud.name, theirs["path"]) == npy_bytes(array)
    np.testing.assert_array_equal((Item & {"item_id": 2}).fetch1("waveform").load(), array)


def test_staged_blob_equals_insert1(Item, cloud):
    data = os.urandom(LARGE)
    Item.insert1({"item_id": 1, "payload": data})
    with dj_staged.staged_insert1(Item) as staged:
        staged.rec["item_id"] = 2
        with staged.open("payload", ".bin") as f:
            for piece in chunks(data):
                f.write(piece)
    ours, theirs = value(Item, 2, "payload"), value(Item, 1, "payload")
    assert ours == theirs  # same content, same hash, same canonical path
    assert (Item & {"item_id": 2}).fetch1("payload") == data
    assert content_hash(read_object(cloud.name, ours["path"])) == ours["hash"]
    assert store_files(cloud.name) == [ours["path"]]  # deduplicated, no staging copy left


SEEN: dict[str, set[str]] = {"gcs": set(), "azure": set()}


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_a_fresh_empty_bucket(cloud, round_):
    where = cloud.spec.get("bucket") or cloud.spec["container"]
    assert where not in SEEN[cloud.name]
    SEEN[cloud.name].add(where)
    assert service_listing(cloud) == []
    assert store_files(cloud.name) == []
    get_store_backend(cloud.name).put_buffer(b"left behind", "marker")
    assert service_listing(cloud) == [f"{cloud.spec['location']}/marker"]
