"""Test-only stand-in for dj-photon-codecs, a DataJoint codec plugin that is installed but cannot be imported.

The real package's ``datajoint.codecs`` entry point ``photon =
dj_photon_codecs:PhotonCodec`` fails to load where its dependency
(``anscombe-transform``) is missing: its module raises ``ImportError`` at
import. DataJoint then logs ``Failed to load codec 'photon' from
dj_photon_codecs:PhotonCodec: ...`` on its logger, which writes to stdout,
the first time it reads the entry points (a codec looked up by a name not
registered yet). A child process that prints its results on stdout gets that
line mixed into them; this stand-in is there so the tests prove theirs do not.

Never installed: on ``sys.path`` with the stand-in of dj-zarr-codecs (``tests/foreign/site``).
"""

from .codecs import PhotonCodec

__version__ = "0.1.0"
__all__ = ["PhotonCodec"]
