"""pytest fixtures: a real PostgreSQL, a DataJoint connection, a local store, S3, GCS and Azure stores, a fresh schema.

Loaded as a pytest plugin (entry point ``pytest11``), so a codec author's test
suite gets them by installing ``dj-staged[test]``. Every name starts with
``djstaged_``, so a host project's own fixtures (``dj_connection``, ``schema``,
...) are never shadowed, and never picked up by the kit in place of these.
Each can be used on its own: ``djstaged_local_store`` needs no database,
``djstaged_schema`` needs ``djstaged_connection``. Nothing heavy is imported
until a fixture runs, and no warning of a fixture's own set-up or tear-down
(a service's import, DataJoint's first import) reaches the host's run, which
may turn warnings into errors (:func:`~dj_staged.testing.services.quietly`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from .services import (
    AzureInfo,
    GCSInfo,
    PostgresInfo,
    S3Info,
    azure_store_spec,
    azurite_server,
    connect_datajoint,
    create_azure_container,
    create_gcs_bucket,
    delete_azure_container,
    embedded_postgres,
    fake_gcs_server,
    gcs_emulator_environment,
    gcs_store_spec,
    moto_s3_server,
    quietly,
    s3_store_spec,
)

if TYPE_CHECKING:
    from .._datajoint import Connection, Schema


@dataclass
class StoreInfo:
    """A configured DataJoint store: its name and where its objects live."""

    name: str
    spec: dict[str, Any]

    @property
    def protocol(self) -> str:
        return cast(str, self.spec["protocol"])


@pytest.fixture(scope="session")
def djstaged_postgres() -> Iterator[PostgresInfo]:
    """A real PostgreSQL server for the whole test session."""
    with embedded_postgres() as info:
        yield info


@pytest.fixture(scope="session")
def djstaged_connection(djstaged_postgres: PostgresInfo) -> Connection:
    """DataJoint connected to :func:`djstaged_postgres`."""
    return connect_datajoint(djstaged_postgres)


@pytest.fixture
def djstaged_stores() -> Iterator[dict[str, Any]]:
    """``dj.config.stores`` for one test, restored afterwards; the store fixtures add to it."""
    with quietly():
        import datajoint as dj

    saved = dict(dj.config.stores)
    dj.config.stores = {}
    try:
        yield dj.config.stores
    finally:
        dj.config.stores = saved


def configure_store(stores: dict[str, Any], name: str, spec: dict[str, Any], default: bool) -> StoreInfo:
    """Add store ``name`` to ``stores`` (the dict :func:`djstaged_stores` yields), optionally as the default."""
    with quietly():
        import datajoint as dj

    stores[name] = spec
    if default or "default" not in stores:
        stores["default"] = name
    dj.config.stores = stores
    return StoreInfo(name=name, spec=spec)


@pytest.fixture
def djstaged_local_store(tmp_path: Path, djstaged_stores: dict[str, Any]) -> StoreInfo:
    """A local file store ``main`` in a temporary folder, also ``stores.default``."""
    location = tmp_path / "store"
    location.mkdir()
    return configure_store(djstaged_stores, "main", {"protocol": "file", "location": str(location)}, default=True)


@pytest.fixture(scope="session")
def djstaged_s3_server() -> Iterator[S3Info]:
    """moto's S3 server on 127.0.0.1 for the whole test session."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with moto_s3_server() as info:
        yield info


@pytest.fixture
def djstaged_s3_store(djstaged_s3_server: S3Info, djstaged_stores: dict[str, Any]) -> StoreInfo:
    """An S3 store ``s3`` in a fresh bucket on :func:`djstaged_s3_server`, also ``stores.default``."""
    bucket = f"dj-staged-{uuid.uuid4().hex[:12]}"
    with quietly():
        import boto3

        boto3.client(
            "s3",
            endpoint_url=f"http://{djstaged_s3_server.endpoint}",
            aws_access_key_id=djstaged_s3_server.access_key,
            aws_secret_access_key=djstaged_s3_server.secret_key,
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)
    return configure_store(djstaged_stores, "s3", s3_store_spec(djstaged_s3_server, bucket), default=True)


@pytest.fixture(scope="session")
def djstaged_gcs_server() -> Iterator[GCSInfo]:
    """fake-gcs-server on 127.0.0.1 for the whole test session, with gcsfs pointed at it through the environment.

    Sets ``STORAGE_EMULATOR_HOST`` and ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``
    (which gcsfs reads when first imported) until the session ends.
    """
    with fake_gcs_server() as info, gcs_emulator_environment(info):
        yield info


@pytest.fixture
def djstaged_gcs_store(djstaged_gcs_server: GCSInfo, djstaged_stores: dict[str, Any]) -> StoreInfo:
    """A GCS store ``gcs`` in a fresh bucket on :func:`djstaged_gcs_server`, also ``stores.default``."""
    bucket = f"dj-staged-{uuid.uuid4().hex[:12]}"
    with quietly():
        create_gcs_bucket(djstaged_gcs_server, bucket)
    return configure_store(djstaged_stores, "gcs", gcs_store_spec(djstaged_gcs_server, bucket), default=True)


@pytest.fixture(scope="session")
def djstaged_azure_server() -> Iterator[AzureInfo]:
    """Azurite's blob service on 127.0.0.1 for the whole test session (``azurite-blob``: see ``azurite_binary``)."""
    with azurite_server() as info:
        yield info


@pytest.fixture
def djstaged_azure_store(djstaged_azure_server: AzureInfo, djstaged_stores: dict[str, Any]) -> Iterator[StoreInfo]:
    """An Azure store ``azure`` in a fresh container on :func:`djstaged_azure_server`, also ``stores.default``.

    The container is deleted after the test.
    """
    container = f"dj-staged-{uuid.uuid4().hex[:12]}"
    create_azure_container(djstaged_azure_server, container)
    try:
        yield configure_store(
            djstaged_stores, "azure", azure_store_spec(djstaged_azure_server, container), default=True
        )
    finally:
        delete_azure_container(djstaged_azure_server, container)


STORE_FIXTURES = {
    "local": "djstaged_local_store",
    "s3": "djstaged_s3_store",
    "gcs": "djstaged_gcs_store",
    "azure": "djstaged_azure_store",
}


@pytest.fixture
def djstaged_conformance_store(request: pytest.FixtureRequest) -> StoreInfo:
    """The store fixture named by indirect parametrization: ``"local"``, ``"s3"``, ``"gcs"`` or ``"azure"``."""
    kind = getattr(request, "param", "local")
    return cast(StoreInfo, request.getfixturevalue(STORE_FIXTURES[kind]))


@pytest.fixture
def djstaged_schema(djstaged_connection: Connection) -> Iterator[Schema]:
    """A fresh, uniquely named schema, dropped afterwards."""
    with quietly():
        import datajoint as dj

        schema = dj.Schema(f"t_{uuid.uuid4().hex[:10]}", connection=djstaged_connection)
    try:
        yield schema
    finally:
        with quietly():
            schema.drop(prompt=False)
