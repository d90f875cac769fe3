"""Shared helpers: tables declared in a fresh schema per test, and store inspection.

Also what only this suite has: the test-only entry points (``tests/entry_points/``, the ``faulty`` storage
protocol), and short aliases for the kit's ``djstaged_*`` fixtures, which our own tests use.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Test-only entry points (the ``faulty`` storage protocol of tests/faults.py). On ``sys.path`` before DataJoint
#: discovers storage adapters (on first use of a store, never at import); child processes get it through
#: ``TEST_PYTHONPATH``. The installed package registers none of them.
ENTRY_POINTS = Path(__file__).resolve().parent / "entry_points"
TEST_PYTHONPATH = [str(Path(__file__).resolve().parent), str(ENTRY_POINTS)]
if str(ENTRY_POINTS) not in sys.path:
    sys.path.append(str(ENTRY_POINTS))

import datajoint as dj  # noqa: E402
import pytest  # noqa: E402

from dj_staged.testing.fixtures import StoreInfo, configure_store  # noqa: E402

# --- short names for the kit's fixtures (the plugin namespaces them as djstaged_*) -------------------


@pytest.fixture(scope="session")
def dj_postgres(djstaged_postgres):
    return djstaged_postgres


@pytest.fixture(scope="session")
def dj_connection(djstaged_connection):
    return djstaged_connection


@pytest.fixture
def dj_stores(djstaged_stores):
    return djstaged_stores


@pytest.fixture
def dj_local_store(djstaged_local_store):
    return djstaged_local_store


@pytest.fixture(scope="session")
def dj_s3_server(djstaged_s3_server):
    return djstaged_s3_server


@pytest.fixture
def dj_s3_store(djstaged_s3_store):
    return djstaged_s3_store


@pytest.fixture(scope="session")
def dj_gcs_server(djstaged_gcs_server):
    return djstaged_gcs_server


@pytest.fixture
def dj_gcs_store(djstaged_gcs_store):
    return djstaged_gcs_store


@pytest.fixture(scope="session")
def dj_azure_server(djstaged_azure_server):
    return djstaged_azure_server


@pytest.fixture
def dj_azure_store(djstaged_azure_store):
    return djstaged_azure_store


@pytest.fixture
def dj_schema(djstaged_schema):
    return djstaged_schema


@pytest.fixture(scope="session")
def djstaged_gcs_server():
    """The kit's fake-gcs-server, reached through a byte-counting proxy (tests/support/tcpcount.py): gcsfs talks
    to the proxy, so :func:`traffic` can tell what a client downloaded."""
    import dataclasses

    from support.tcpcount import CountingProxy

    from dj_staged.testing.services import fake_gcs_server, gcs_emulator_environment

    with fake_gcs_server() as info:
        proxy = CountingProxy(("127.0.0.1", int(info.endpoint.rsplit(":", 1)[1])))
        counted = dataclasses.replace(info, endpoint=proxy.endpoint)
        _proxies["gcs"] = proxy
        try:
            with gcs_emulator_environment(counted):
                yield counted
        finally:
            proxy.close()


@pytest.fixture(scope="session")
def djstaged_azure_server():
    """The kit's Azurite, reached through a byte-counting proxy (see :func:`djstaged_gcs_server`)."""
    import dataclasses

    from support.tcpcount import CountingProxy

    from dj_staged.testing.services import azurite_server

    with azurite_server() as info:
        host_port, account = info.endpoint.removeprefix("http://").split("/", 1)
        proxy = CountingProxy(("127.0.0.1", int(host_port.rsplit(":", 1)[1])))
        _proxies["azure"] = proxy
        try:
            yield dataclasses.replace(info, endpoint=f"{proxy.endpoint}/{account}")
        finally:
            proxy.close()


_proxies: dict = {}


def traffic(store):
    """``with traffic(store) as counts:`` the bytes the client sent and received in the block (``downloaded``,
    ``uploaded``), on the GCS and Azure stores; the S3 store counts its own calls (:func:`s3_calls`)."""
    return _proxies[store.protocol].counting()


STORES = {"local": "dj_local_store", "s3": "dj_s3_store", "gcs": "dj_gcs_store", "azure": "dj_azure_store"}


@pytest.fixture(params=list(STORES))
def store(request):
    """The test runs on every store DataJoint supports: the local store ``main``, the S3 store ``s3`` (moto), the
    Google Cloud Storage store ``gcs`` (fake-gcs-server) and the Azure Blob store ``azure`` (Azurite)."""
    return request.getfixturevalue(STORES[request.param])


@dataclass
class FaultyStoreInfo(StoreInfo):
    """A :func:`dj_faulty_store`: a store and the plan of faults its filesystem raises."""

    plan: Any = None


@pytest.fixture
def dj_faulty_store(tmp_path: Path, dj_stores: dict) -> Iterator[FaultyStoreInfo]:
    """A local store ``main`` (also ``stores.default``) whose filesystem fails on command (tests/faults.py).

    Arm faults with ``dj_faulty_store.plan.fail("write", nth=3)``.
    """
    from faults import fault_plan, forget_plan

    location = tmp_path / "faulty-store"
    location.mkdir()
    info = configure_store(dj_stores, "main", {"protocol": "faulty", "location": str(location)}, default=True)
    try:
        yield FaultyStoreInfo(name=info.name, spec=info.spec, plan=fault_plan(str(location)))
    finally:
        forget_plan(str(location))


@contextlib.contextmanager
def s3_calls(store) -> Iterator[tuple[Counter, list[int]]]:
    """Count the S3 operations the store's client makes inside the block, and the bytes each GetObject returned.

    It listens on botocore's ``after-call`` events, the client's own extension point.
    """
    from datajoint.hash_registry import get_store_backend

    fs = get_store_backend(store.name).fs
    fs.connect()
    calls: Counter = Counter()
    downloaded: list[int] = []

    def on_call(model, parsed, **kwargs):
        calls[model.name] += 1
        if model.name == "GetObject":
            downloaded.append(parsed.get("ContentLength", 0))

    fs.s3.meta.events.register("after-call.s3", on_call)
    try:
        yield calls, downloaded
    finally:
        fs.s3.meta.events.unregister("after-call.s3", on_call)


@contextlib.contextmanager
def s3_listings(store) -> Iterator[Counter]:
    """Count the listings the store's client starts inside the block, per (operation, prefix).

    A listing is a ``ListObjectsV2`` or ``ListMultipartUploads`` request that
    does not continue an earlier one (its further pages are the same listing).
    """
    from datajoint.hash_registry import get_store_backend

    fs = get_store_backend(store.name).fs
    fs.connect()
    listings: Counter = Counter()

    def on_params(params, model, **kwargs):
        continued = {"ContinuationToken", "KeyMarker", "UploadIdMarker"} & set(params)
        if model.name in ("ListObjectsV2", "ListMultipartUploads") and not continued:
            listings[(model.name, params.get("Prefix", ""))] += 1

    fs.s3.meta.events.register("before-parameter-build.s3", on_params)
    try:
        yield listings
    finally:
        fs.s3.meta.events.unregister("before-parameter-build.s3", on_params)


def declare(schema, name: str, definition: str, tier=dj.Manual):
    """Declare a table class ``name`` with ``definition`` in ``schema``."""
    cls = type(name, (tier,), {"definition": definition})
    return schema(cls)


LEASES = "_staging/_leases/"


def store_files(store, *, leases: bool = False) -> list[str]:
    """Every file in a store (local or S3), relative to its location, sorted.

    The leases a block holds while it runs (``_staging/_leases/``) are left out
    unless ``leases=True``; tests/test_gc.py checks that every block removes them.
    """
    if store.spec["protocol"] == "file":
        root = Path(store.spec["location"])
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    else:
        from dj_staged.stores import resolve_store

        files = sorted(resolve_store(store.name, dj.config).list_files(""))
    return files if leases else [f for f in files if not f.startswith(LEASES)]


def lease_files(store) -> list[str]:
    """The lease files in a store."""
    return [f for f in store_files(store, leases=True) if f.startswith(LEASES)]


def lease_records(store) -> list[dict]:
    """The lease headers (``lease.json``) in a local store, parsed."""
    root = Path(store.spec["location"])
    return [json.loads((root / f).read_bytes()) for f in lease_files(store) if f.endswith("/lease.json")]


def wait_for_session_end(connection, pid: int, timeout: float = 30.0) -> None:
    """Wait until the database session ``pid`` is gone (PostgreSQL releases its locks as it exits).

    A killed client's backend notices the closed socket and exits shortly
    after; this polls that state, bounded by ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while connection.query("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", args=(pid,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"database session {pid} did not end within {timeout} s")
        time.sleep(0.01)


@pytest.fixture
def Recording(dj_schema, dj_local_store):
    return declare(
        dj_schema,
        "Recording",
        """
        recording_id : int32
        ---
        waveform : <npy@main>
        raw : <object@main>
        note = "" : varchar(64)
        """,
    )


def _foreign_lease(dj_postgres, store):
    """Write a lease of another writer into ``store``; ``live=True`` holds its lock on a separate session.

    Usage: ``with foreign_lease(schema_name, paths, live=True) as folder: ...``.
    """
    import secrets
    import uuid

    from dj_staged.leases.locks import LEASE_NS
    from dj_staged.leases.records import LeaseEntry, LeaseRecord, lease_folder, write_header
    from dj_staged.stores import resolve_store

    @contextlib.contextmanager
    def lease(schema_name: str, paths: list[str], *, live: bool) -> Iterator[str]:
        session = dj.Connection(dj_postgres.host, dj_postgres.user, dj_postgres.password, dj_postgres.port)
        key = secrets.randbelow(1 << 31)
        if live:
            session.query("SELECT pg_advisory_lock(%s, %s)", args=(LEASE_NS, key))
        lease_id = uuid.uuid4().hex
        record = LeaseRecord(lease_id=lease_id, schema=schema_name, lock=key, table="recording", store=store.name)
        entry = LeaseEntry(field="blob", key={"recording_id": 99}, paths=paths, at=time.time())
        write_header(resolve_store(store.name, dj.config), record, entry)
        try:
            yield lease_folder(schema_name, lease_id)
        finally:
            session.close()

    return lease


@pytest.fixture
def foreign_lease(dj_postgres, dj_local_store):
    """Another writer's lease in the local store (see :func:`_foreign_lease`)."""
    return _foreign_lease(dj_postgres, dj_local_store)


@pytest.fixture
def s3_foreign_lease(dj_postgres, dj_s3_store):
    """Another writer's lease in the S3 store (see :func:`_foreign_lease`)."""
    return _foreign_lease(dj_postgres, dj_s3_store)


class Pause:
    """An observer of a protocol step that pauses the thread it was armed for until released.

    ``with steps.observe("collector.list", pause):`` then start the party's
    thread; ``pause.wait()`` returns once that thread is paused at the step,
    ``pause.go()`` lets it continue.
    """

    def __init__(self, thread_name: str, timeout: float = 60.0) -> None:
        self.thread_name = thread_name
        self.timeout = timeout
        self.reached = threading.Event()
        self.released = threading.Event()
        self.context: dict = {}

    def __call__(self, step: str, **context) -> None:
        if threading.current_thread().name != self.thread_name or self.reached.is_set():
            return
        self.context = {"step": step, **context}
        self.reached.set()
        if not self.released.wait(self.timeout):
            raise TimeoutError(f"{self.thread_name} was never released from {step}")

    def wait(self) -> None:
        if not self.reached.wait(self.timeout):
            raise TimeoutError(f"{self.thread_name} never reached its step")

    def go(self) -> None:
        self.released.set()


class Party(threading.Thread):
    """A thread that runs one party of a race and keeps its result or error for the test."""

    def __init__(self, name: str, target, *args, **kwargs) -> None:
        super().__init__(name=name, daemon=True)
        self._call = (target, args, kwargs)
        self.result = None
        self.error: BaseException | None = None

    def run(self) -> None:
        target, args, kwargs = self._call
        try:
            self.result = target(*args, **kwargs)
        except BaseException as error:
            self.error = error

    def outcome(self, timeout: float = 60.0):
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"{self.name} did not finish")
        if self.error is not None:
            raise self.error
        return self.result


def wait_for_lock_waiter(connection, timeout: float = 30.0, *, locktype: str = "advisory") -> None:
    """Wait until some session waits for a lock of ``locktype``: ``advisory`` (a writer blocked on a collector's
    gate, or on a lease key), ``transactionid`` (an ``INSERT`` blocked on another transaction's row)."""
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_locks WHERE locktype = %s AND NOT granted"
    while not connection.query(query, args=(locktype,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no session started waiting for a lock of type {locktype}")
        time.sleep(0.01)


@pytest.fixture
def proxy(dj_postgres):
    """A proxy on 127.0.0.1 in front of the test server that can cut connections or lose replies
    (tests/support/pgproxy.py)."""
    from support.pgproxy import ReplyDroppingProxy

    with ReplyDroppingProxy(dj_postgres) as running:
        yield running


def advisory_locks(connection, pid: int | None = None) -> list[tuple[int, int, int]]:
    """dj-staged's advisory locks held right now (namespace, key, backend pid), by session ``pid`` or by any."""
    from dj_staged.leases.claims import CLAIM_NS
    from dj_staged.leases.locks import GATE_NS, LEASE_NS

    rows = connection.query(
        "SELECT classid::bigint, objid::bigint, pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid::bigint IN (%s, %s, %s) AND (%s::int IS NULL OR pid = %s::int)",
        args=(LEASE_NS, GATE_NS, CLAIM_NS, pid, pid),
    ).fetchall()
    return sorted((int(a), int(b), int(c)) for a, b, c in rows)


@pytest.fixture
def elsewhere(dj_postgres, dj_schema):
    """The test's schema reached through a second database session, as another process would reach it."""
    connection = dj.Connection(dj_postgres.host, dj_postgres.user, dj_postgres.password, dj_postgres.port)
    try:
        yield dj.Schema(dj_schema.database, connection=connection, create_schema=False, create_tables=False)
    finally:
        connection.close()


@pytest.fixture
def Mixed(dj_schema, dj_local_store):
    """A table with a field of every kind: plain, in-table codecs, a reference, and object-store codecs."""
    return declare(
        dj_schema,
        "Mixed",
        """
        subject : varchar(255)
        session : int32
        ---
        count = 0 : int32
        inline = null : <blob>
        inline_attach = null : <attach>
        ref = null : <filepath@main>
        raw = null : <object@main>
        arr = null : <npy@main>
        doc = null : <attach@main>
        """,
    )


def attempt(table, rec: dict, call) -> None:
    """A staged insert of ``table`` that sets ``rec`` and then does ``call(staged)``."""
    import dj_staged

    with dj_staged.staged_insert1(table) as staged:
        staged.rec.update(rec)
        call(staged)
