"""Fixtures of the store layer's tests."""

from __future__ import annotations

import pytest
from support.leases import foreign_lease


@pytest.fixture
def s3_foreign_lease(djstaged_postgres, djstaged_s3_store):
    """Another writer's lease in the S3 store (see :func:`support.leases.foreign_lease`)."""
    return foreign_lease(djstaged_postgres, djstaged_s3_store)
