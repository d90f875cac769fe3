"""What is in a store, and what a test's client sent to and received from the service.

:func:`store_files` reads a local store with ``os`` (independently of dj-staged) and any other through the
store layer; :func:`s3_calls` and :func:`s3_listings` listen on botocore's own events; :func:`traffic` reads
the byte-counting proxies (:mod:`support.tcpcount`) the root ``conftest.py`` puts in front of the GCS and
Azure emulators.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datajoint as dj

from dj_staged.testing.fixtures import StoreInfo

LEASES = "_staging/_leases/"

#: The byte-counting proxy in front of each emulator, by protocol (``gcs``, ``azure``): set by the root
#: ``conftest.py``'s ``djstaged_gcs_server`` and ``djstaged_azure_server`` while they run.
PROXIES: dict[str, Any] = {}


@dataclass
class FaultyStoreInfo(StoreInfo):
    """The root ``conftest.py``'s ``dj_faulty_store``: a store and the plan of faults its filesystem raises
    (:mod:`support.faults`)."""

    plan: Any = None


def store_files(store: Any, *, leases: bool = False) -> list[str]:
    """Every file in a store (local or object store), relative to its location, sorted.

    The leases a block holds while it runs (``_staging/_leases/``) are left out
    unless ``leases=True``; tests/gc/test_gc.py checks that every block removes them.
    """
    if store.spec["protocol"] == "file":
        root = Path(store.spec["location"])
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    else:
        from dj_staged.stores import resolve_store

        files = sorted(resolve_store(store.name, dj.config).list_files(""))
    return files if leases else [f for f in files if not f.startswith(LEASES)]


def lease_files(store: Any) -> list[str]:
    """The lease files in a store."""
    return [f for f in store_files(store, leases=True) if f.startswith(LEASES)]


def lease_records(store: Any) -> list[dict]:
    """The lease headers in a local store, parsed: each ``lease.json``, and the first line of each lease that is one
    file (``{lease_id}.jsonl``)."""
    root = Path(store.spec["location"])
    files = [f for f in lease_files(store) if f.endswith(("/lease.json", ".jsonl"))]
    return [json.loads((root / f).read_bytes().partition(b"\n")[0]) for f in files]


def put_file(store: Any, path: str, data: bytes = b"left behind", age: float = 0.0) -> Path:
    """Write a file into a local store, ``age`` seconds old."""
    target = Path(store.spec["location"]) / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    if age:
        stamp = time.time() - age
        os.utime(target, (stamp, stamp))
    return target


def traffic(store: Any) -> Any:
    """``with traffic(store) as counts:`` the bytes the client sent and received in the block (``downloaded``,
    ``uploaded``), on the GCS and Azure stores; the S3 store counts its own calls (:func:`s3_calls`)."""
    return PROXIES[store.protocol].counting()


@contextlib.contextmanager
def s3_calls(store: Any) -> Iterator[tuple[Counter, list[int]]]:
    """Count the S3 operations the store's client makes inside the block, and the bytes each GetObject returned.

    It listens on botocore's ``after-call`` events, the client's own extension point.
    """
    from datajoint.hash_registry import get_store_backend

    fs = get_store_backend(store.name).fs
    fs.connect()
    calls: Counter = Counter()
    downloaded: list[int] = []

    def on_call(model: Any, parsed: dict, **kwargs: Any) -> None:
        calls[model.name] += 1
        if model.name == "GetObject":
            downloaded.append(parsed.get("ContentLength", 0))

    fs.s3.meta.events.register("after-call.s3", on_call)
    try:
        yield calls, downloaded
    finally:
        fs.s3.meta.events.unregister("after-call.s3", on_call)


@contextlib.contextmanager
def s3_listings(store: Any) -> Iterator[Counter]:
    """Count the listings the store's client starts inside the block, per (operation, prefix).

    A listing is a ``ListObjectsV2`` or ``ListMultipartUploads`` request that
    does not continue an earlier one (its further pages are the same listing).
    """
    from datajoint.hash_registry import get_store_backend

    fs = get_store_backend(store.name).fs
    fs.connect()
    listings: Counter = Counter()

    def on_params(params: dict, model: Any, **kwargs: Any) -> None:
        continued = {"ContinuationToken", "KeyMarker", "UploadIdMarker"} & set(params)
        if model.name in ("ListObjectsV2", "ListMultipartUploads") and not continued:
            listings[(model.name, params.get("Prefix", ""))] += 1

    fs.s3.meta.events.register("before-parameter-build.s3", on_params)
    try:
        yield listings
    finally:
        fs.s3.meta.events.unregister("before-parameter-build.s3", on_params)
