"""pytest plugin of ``make peer``'s enabled mode (``-p djpeer_enable``): ``dj_staged.enable()`` before any test."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Switch dj-staged on for the whole run, before DataJoint's conftest and tests are imported."""
    import dj_staged

    dj_staged.enable()
    if not dj_staged.is_enabled():
        raise pytest.UsageError("dj_staged.enable() did not take effect")
