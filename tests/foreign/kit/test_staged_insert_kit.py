"""dj-staged's conformance kit as dj-zarr-codecs' own test suite would hold it: a module placed in its ``tests/``.

That suite turns every warning into an error (``filterwarnings = error``); the kit's set-up (an embedded
PostgreSQL, moto's S3 server, DataJoint's first import) must not add any. ``tests/kit/test_coexistence.py`` copies this
module into the host-project stand-in (``tests/foreign/host``) and runs it there.
"""

import numpy as np
import zarr

import dj_staged
from dj_staged.testing import SchemaAddressedConformance


class TestZarrArrayCodecOwnCall(SchemaAddressedConformance):
    """The writer makes the codec's own call, `zarr.create_array(store=..., data=...)`, on the staged handle."""

    codec = "<zarr@{store}>"

    def sample(self, tmp_path):
        return np.linspace(0, 1, 600, dtype="float32").reshape(30, 20)

    def write(self, staged, field, sample):
        zarr.create_array(store=staged.store(field, ".zarr"), data=sample, write_data=True)

    def normalize(self, fetched):
        return fetched[...]


class TestZarrArrayCodecBigEndian(SchemaAddressedConformance):
    """A big-endian array, written through the documented path, `dj_staged.create_zarr_array`.

    The codec's own call would store it little-endian with no trace of its byte order, so the row could only
    record `float64`, where insert1 records the dtype it was given, `>f8`. Told the dtype, `create_zarr_array`
    records it as insert1 does.
    """

    codec = "<zarr@{store}>"

    def sample(self, tmp_path):
        return np.arange(600, dtype=">f8").reshape(30, 20)

    def write(self, staged, field, sample):
        z = dj_staged.create_zarr_array(staged, field, shape=sample.shape, dtype=sample.dtype)
        for start in range(0, sample.shape[0], 10):
            z[start : start + 10] = sample[start : start + 10]

    def normalize(self, fetched):
        return fetched[...]
