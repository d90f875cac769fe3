"""pytest fixtures: a real PostgreSQL, a DataJoint connection, a local store, an S3 store, a fresh schema.

Loaded as a pytest plugin (entry point ``pytest11``), so a codec author's test
suite gets them by installing ``dj-staged[test]``. Each can be used on its own:
``dj_local_store`` needs no database, ``dj_schema`` needs ``dj_connection``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .services import PostgresInfo, S3Info, connect_datajoint, embedded_postgres, moto_s3_server


@dataclass
class StoreInfo:
    """A configured DataJoint store: its name and where its objects live."""

    name: str
    spec: dict[str, Any]

    @property
    def protocol(self) -> str:
        return self.spec["protocol"]


@pytest.fixture(scope="session")
def dj_postgres() -> Iterator[PostgresInfo]:
    """A real PostgreSQL server for the whole test session."""
    with embedded_postgres() as info:
        yield info


@pytest.fixture(scope="session")
def dj_connection(dj_postgres: PostgresInfo) -> Any:
    """DataJoint connected to :func:`dj_postgres`."""
    return connect_datajoint(dj_postgres)


@pytest.fixture
def dj_stores() -> Iterator[dict]:
    """``dj.config.stores`` for one test, restored afterwards; fixtures below add to it."""
    import datajoint as dj

    saved = dict(dj.config.stores)
    dj.config.stores = {}
    try:
        yield dj.config.stores
    finally:
        dj.config.stores = saved


def _configure(stores: dict, name: str, spec: dict, default: bool) -> StoreInfo:
    import datajoint as dj

    stores[name] = spec
    if default or "default" not in stores:
        stores["default"] = name
    dj.config.stores = stores
    return StoreInfo(name=name, spec=spec)


@pytest.fixture
def dj_local_store(tmp_path: Path, dj_stores: dict) -> StoreInfo:
    """A local file store ``main`` in a temporary folder, also ``stores.default``."""
    location = tmp_path / "store"
    location.mkdir()
    return _configure(dj_stores, "main", {"protocol": "file", "location": str(location)}, default=True)


@dataclass
class FaultyStoreInfo(StoreInfo):
    """A :func:`dj_faulty_store`: a store and the plan of faults its filesystem raises."""

    plan: Any = None


@pytest.fixture
def dj_faulty_store(tmp_path: Path, dj_stores: dict) -> Iterator[FaultyStoreInfo]:
    """A local store ``main`` (also ``stores.default``) whose filesystem fails on command.

    Arm faults with ``dj_faulty_store.plan.fail("write", nth=3)``; see
    :mod:`dj_staged.testing.faults`.
    """
    from .faults import fault_plan, forget_plan

    location = tmp_path / "faulty-store"
    location.mkdir()
    info = _configure(dj_stores, "main", {"protocol": "faulty", "location": str(location)}, default=True)
    try:
        yield FaultyStoreInfo(name=info.name, spec=info.spec, plan=fault_plan(str(location)))
    finally:
        forget_plan(str(location))


@pytest.fixture(scope="session")
def dj_s3_server() -> Iterator[S3Info]:
    """moto's S3 server on 127.0.0.1 for the whole test session."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with moto_s3_server() as info:
        yield info


@pytest.fixture
def dj_s3_store(dj_s3_server: S3Info, dj_stores: dict) -> StoreInfo:
    """An S3 store ``s3`` in a fresh bucket on :func:`dj_s3_server`, also ``stores.default``."""
    import boto3

    bucket = f"dj-staged-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=f"http://{dj_s3_server.endpoint}",
        aws_access_key_id=dj_s3_server.access_key,
        aws_secret_access_key=dj_s3_server.secret_key,
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    spec = {
        "protocol": "s3",
        "endpoint": dj_s3_server.endpoint,
        "bucket": bucket,
        "location": "data",
        "access_key": dj_s3_server.access_key,
        "secret_key": dj_s3_server.secret_key,
        "secure": False,
    }
    return _configure(dj_stores, "s3", spec, default=True)


STORE_FIXTURES = {"local": "dj_local_store", "s3": "dj_s3_store"}


@pytest.fixture
def dj_conformance_store(request: pytest.FixtureRequest) -> StoreInfo:
    """``dj_local_store`` or ``dj_s3_store``, chosen by indirect parametrization: ``"local"`` (default) or ``"s3"``."""
    kind = getattr(request, "param", "local")
    return request.getfixturevalue(STORE_FIXTURES[kind])


@pytest.fixture
def dj_schema(dj_connection: Any) -> Iterator[Any]:
    """A fresh, uniquely named schema, dropped afterwards."""
    import datajoint as dj

    schema = dj.Schema(f"t_{uuid.uuid4().hex[:10]}", connection=dj_connection)
    try:
        yield schema
    finally:
        schema.drop(prompt=False)
