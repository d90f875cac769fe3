"""Testing support for codec authors: real services as pytest fixtures, and the conformance kit.

Importing this package imports neither pytest nor DataJoint: ``python -m
dj_staged.demo`` uses :mod:`dj_staged.testing.services` without pytest. The
pytest plugin (:mod:`dj_staged.testing.plugin`) registers the kit's modules for
assertion rewriting and provides the fixtures, all named ``djstaged_*`` so they
never shadow a host project's own. The suites are imported on first use, with the
warnings of that import (DataJoint's, at its first import) kept from the host's run.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what a type checker sees of the suites (at run time they are imported on first use, below)
    from .conformance import HashAddressedConformance as HashAddressedConformance
    from .conformance import NonParticipatingCodecConformance as NonParticipatingCodecConformance
    from .conformance import SchemaAddressedConformance as SchemaAddressedConformance
    from .conformance import StagedCodecConformance as StagedCodecConformance

__all__ = [
    "HashAddressedConformance",
    "NonParticipatingCodecConformance",
    "PlacedConformance",
    "SchemaAddressedConformance",
    "StagedCodecConformance",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from .services import quietly

        with quietly():  # the suites import DataJoint, which warns at its first import
            from . import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
