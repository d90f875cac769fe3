"""Test-only stand-in for dj-zarr-codecs, DataJoint's ``<zarr@>`` plugin, laid out as the real package is.

It reproduces what dj-staged depends on (issues 14 and 29, measured at
dj-zarr-codecs commit 9ba1988): the distribution name and version, the layout
(the package re-exports ``ZarrArrayCodec`` and ``__version__``; the class is
defined in :mod:`dj_zarr_codecs.codecs`, the version in
``dj_zarr_codecs._version``, as hatch-vcs writes it), the ``datajoint.codecs``
entry point ``zarr = dj_zarr_codecs:ZarrArrayCodec``, and the codec's
behaviour (see :mod:`dj_zarr_codecs.codecs`). Like the original it logs
nothing of its own: what a run of it prints on stdout comes from DataJoint's
logger.

It is never installed: ``tests/foreign/site`` (this package, the stand-in of
dj-photon-codecs and their ``.dist-info``) is put on ``sys.path`` only by the
child processes of the tests that want a second ``zarr`` codec.
"""

from ._version import version as __version__
from .codecs import ZarrArrayCodec

__all__ = ["ZarrArrayCodec", "__version__"]
