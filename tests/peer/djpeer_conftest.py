"""PostgreSQL stand-ins for the two MySQL-only fixtures of DataJoint's test suite (``make peer``).

``make peer`` copies this file to ``tests/integration/conftest.py`` of the unpacked DataJoint sdist, where
pytest lets it override fixtures of ``tests/conftest.py``. DataJoint's ``connection_root`` creates its test
users with MySQL statements (``CREATE USER ... @'%'``, ``GRANT ... ON `djtest%`.*``) and drops the test
databases with ``SHOW DATABASES``; here the same users are PostgreSQL roles and the test databases are
schemas. Everything else in DataJoint's suite runs as shipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import datajoint as dj
import pytest

ROLES = ("datajoint", "djview", "djssl")


@pytest.fixture(scope="session")
def connection_root(connection_root_bare: Any, prefix: str) -> Iterator[Any]:
    """The superuser connection, with DataJoint's test users created as roles that may create schemas."""
    conn = connection_root_bare
    for role in ROLES:
        exists = conn.query("SELECT 1 FROM pg_roles WHERE rolname = %s", args=(role,)).fetchall()
        if not exists:
            conn.query(f"CREATE ROLE {role} LOGIN PASSWORD '{role}'")
    database = conn.query("SELECT current_database()").fetchone()[0]
    conn.query(f'GRANT CREATE ON DATABASE "{database}" TO datajoint')
    yield conn
    schemas = conn.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", args=(prefix + r"\_%",)).fetchall()
    for (schema,) in schemas:
        conn.query(f'DROP SCHEMA "{schema}" CASCADE')
    for role in ROLES:
        conn.query(f"DROP OWNED BY {role} CASCADE")
        conn.query(f"DROP ROLE {role}")
    conn.close()


@pytest.fixture(scope="session")
def connection_test(connection_root: Any, db_creds_test: dict) -> Iterator[Any]:
    """A connection as DataJoint's test user ``datajoint``."""
    connection = dj.Connection(**db_creds_test)
    yield connection
    connection.close()
