"""The fixtures shared across the suite; the helpers are in the ``support`` package (``from support.x import``).

The kit's fixtures (``djstaged_*``, from dj-staged's pytest plugin) give each test a database, stores and a
fresh schema. Here: the test-only entry points on ``sys.path`` (``tests/entry_points/``, the ``faulty``
storage protocol of ``support/faults.py``), byte-counting proxies in front of the GCS and Azure emulators,
every test on every store (``store``), and tables and sessions several folders use. A fixture that serves one
folder is in that folder's ``conftest.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from support.paths import ENTRY_POINTS

# On ``sys.path`` before DataJoint discovers storage adapters (on first use of a store, never at import); child
# processes get it through ``support.paths.TEST_PYTHONPATH``. The installed package registers none of them.
if str(ENTRY_POINTS) not in sys.path:
    sys.path.append(str(ENTRY_POINTS))

import datajoint as dj  # noqa: E402
import pytest  # noqa: E402
from support.stores import PROXIES, FaultyStoreInfo  # noqa: E402
from support.tables import declare  # noqa: E402

from dj_staged.testing.fixtures import configure_store  # noqa: E402


@pytest.fixture(scope="session")
def djstaged_gcs_server():
    """The kit's fake-gcs-server, reached through a byte-counting proxy (tests/support/tcpcount.py): gcsfs talks
    to the proxy, so :func:`support.stores.traffic` can tell what a client downloaded."""
    import dataclasses

    from support.tcpcount import CountingProxy

    from dj_staged.testing.services import fake_gcs_server, gcs_emulator_environment

    with fake_gcs_server() as info:
        proxy = CountingProxy(("127.0.0.1", int(info.endpoint.rsplit(":", 1)[1])))
        counted = dataclasses.replace(info, endpoint=proxy.endpoint)
        PROXIES["gcs"] = proxy
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
        PROXIES["azure"] = proxy
        try:
            yield dataclasses.replace(info, endpoint=f"{proxy.endpoint}/{account}")
        finally:
            proxy.close()


STORES = {
    "local": "djstaged_local_store",
    "s3": "djstaged_s3_store",
    "gcs": "djstaged_gcs_store",
    "azure": "djstaged_azure_store",
}


@pytest.fixture(params=list(STORES))
def store(request):
    """The test runs on every store DataJoint supports: the local store ``main``, the S3 store ``s3`` (moto), the
    Google Cloud Storage store ``gcs`` (fake-gcs-server) and the Azure Blob store ``azure`` (Azurite)."""
    return request.getfixturevalue(STORES[request.param])


@pytest.fixture
def dj_faulty_store(tmp_path: Path, djstaged_stores: dict) -> Iterator[FaultyStoreInfo]:
    """A local store ``main`` (also ``stores.default``) whose filesystem fails on command (tests/support/faults.py).

    Arm faults with ``dj_faulty_store.plan.fail("write", nth=3)``.
    """
    from support.faults import fault_plan, forget_plan

    location = tmp_path / "faulty-store"
    location.mkdir()
    info = configure_store(djstaged_stores, "main", {"protocol": "faulty", "location": str(location)}, default=True)
    try:
        yield FaultyStoreInfo(name=info.name, spec=info.spec, plan=fault_plan(str(location)))
    finally:
        forget_plan(str(location))


@pytest.fixture
def Recording(djstaged_schema, djstaged_local_store):
    return declare(
        djstaged_schema,
        "Recording",
        """
        recording_id : int32
        ---
        waveform : <npy@main>
        raw : <object@main>
        note = "" : varchar(64)
        """,
    )


@pytest.fixture
def Mixed(djstaged_schema, djstaged_local_store):
    """A table with a field of every kind: plain, in-table codecs, a reference, and object-store codecs."""
    return declare(
        djstaged_schema,
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


@pytest.fixture
def proxy(djstaged_postgres):
    """A proxy on 127.0.0.1 in front of the test server that can cut connections or lose replies
    (tests/support/pgproxy.py)."""
    from support.pgproxy import ReplyDroppingProxy

    with ReplyDroppingProxy(djstaged_postgres) as running:
        yield running


@pytest.fixture
def elsewhere(djstaged_postgres, djstaged_schema):
    """The test's schema reached through a second database session, as another process would reach it."""
    connection = dj.Connection(
        djstaged_postgres.host, djstaged_postgres.user, djstaged_postgres.password, djstaged_postgres.port
    )
    try:
        yield dj.Schema(djstaged_schema.database, connection=connection, create_schema=False, create_tables=False)
    finally:
        connection.close()
