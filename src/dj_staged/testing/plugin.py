"""pytest plugin entry point of dj-staged: registers the fixtures of :mod:`dj_staged.testing.fixtures`."""

from .fixtures import (  # noqa: F401
    dj_conformance_store,
    dj_connection,
    dj_faulty_store,
    dj_local_store,
    dj_postgres,
    dj_s3_server,
    dj_s3_store,
    dj_schema,
    dj_stores,
)
