"""pytest plugin entry point of dj-staged (``pytest11``): the fixtures of :mod:`dj_staged.testing.fixtures`.

Loading it imports pytest and the fixture definitions only: no DataJoint, no
database driver, no S3, GCS or Azure client (each fixture imports what it needs when a test
asks for it), so a DataJoint warning at import cannot abort a host project's
``filterwarnings = error`` run while plugins load. Every fixture is named
``djstaged_*``.
"""

import pytest

# Before the kit's modules are first imported: a failing check then shows the values it compared.
pytest.register_assert_rewrite("dj_staged.testing.conformance", "dj_staged.testing.inspection")

from .fixtures import (  # noqa: E402, F401
    djstaged_azure_server,
    djstaged_azure_store,
    djstaged_conformance_store,
    djstaged_connection,
    djstaged_gcs_server,
    djstaged_gcs_store,
    djstaged_local_store,
    djstaged_postgres,
    djstaged_s3_server,
    djstaged_s3_store,
    djstaged_schema,
    djstaged_stores,
)
