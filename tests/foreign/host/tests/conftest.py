"""A plugin project's own fixtures, with the names such a project picks: ``dj_connection`` among them.

DataJoint warns at import (no ``datajoint.json``, ``datajoint.migrate``), so the
project imports it with warnings silenced: its ``filterwarnings = error`` would
turn them into errors otherwise. The database comes from ``DJ_HOST``, ``DJ_USER``,
``DJ_PASS``, ``DJ_BACKEND`` and ``DJ_PORT``, which DataJoint reads itself.
"""

import uuid
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import datajoint as dj

CONNECTIONS = []


@pytest.fixture(scope="session")
def dj_connection():
    connection = dj.conn(reset=True)
    CONNECTIONS.append(connection)
    return connection


@pytest.fixture
def store(tmp_path):
    (tmp_path / "store").mkdir()
    dj.config.stores = {"default": "local", "local": {"protocol": "file", "location": str(tmp_path / "store")}}
    return "local"


@pytest.fixture
def schema(dj_connection):
    schema = dj.Schema(f"host_{uuid.uuid4().hex[:10]}", connection=dj_connection)
    yield schema
    schema.drop(prompt=False)
