"""Testing support for codec authors: real services as pytest fixtures, and the conformance kit.

The kit's modules are registered for pytest's assertion rewriting before they
are imported, so a failing check shows the values it compared. The suites are
imported on first use: loading the pytest plugin does not import DataJoint.
"""

from typing import Any

import pytest

pytest.register_assert_rewrite("dj_staged.testing.conformance", "dj_staged.testing.inspection")

__all__ = [
    "HashAddressedConformance",
    "NonParticipatingCodecConformance",
    "SchemaAddressedConformance",
    "StagedCodecConformance",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
