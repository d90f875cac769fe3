"""Fixtures of the collector's tests."""

from __future__ import annotations

import pytest
from support.leases import foreign_lease as write_foreign_lease


@pytest.fixture
def foreign_lease(djstaged_postgres, djstaged_local_store):
    """Another writer's lease in the local store (see :func:`support.leases.foreign_lease`)."""
    return write_foreign_lease(djstaged_postgres, djstaged_local_store)
