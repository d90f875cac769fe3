"""What only holds with the stand-in of dj-zarr-codecs installed: run by tests/codecs/test_foreign_codecs.py in a child.

Not collected by the main run (``tests/foreign`` is in ``norecursedirs``): DataJoint would resolve ``zarr`` to
dj-staged's codec there. The child puts ``tests/foreign/site`` on ``sys.path`` and passes this module by name.
"""

from __future__ import annotations

from importlib.metadata import entry_points, version
from operator import methodcaller
from pathlib import Path

import datajoint as dj
import dj_zarr_codecs
import numpy as np
import pytest
from datajoint.builtin_codecs.schema import SchemaCodec
from support.stores import store_files
from support.tables import attempt, declare

import dj_staged
from dj_staged.errors import NotParticipatingError
from dj_staged.testing import SchemaAddressedConformance


def test_the_stand_in_owns_zarr():
    assert version("dj-zarr-codecs") == dj_zarr_codecs.__version__
    (theirs,) = [p for p in entry_points(group="datajoint.codecs", name="zarr") if p.dist.name == "dj-zarr-codecs"]
    assert theirs.value == "dj_zarr_codecs:ZarrArrayCodec"
    assert theirs.load() is dj_zarr_codecs.ZarrArrayCodec  # re-exported: the class lives where the real one does
    assert dj_zarr_codecs.ZarrArrayCodec.__module__ == "dj_zarr_codecs.codecs"
    assert issubclass(dj_zarr_codecs.ZarrArrayCodec, SchemaCodec)
    assert type(dj.codecs.get_codec("zarr")) is dj_zarr_codecs.ZarrArrayCodec


def test_a_plugin_that_fails_to_load_is_installed_beside_it():
    """dj-photon-codecs' stand-in: DataJoint read its entry point, failed to load it, and went on."""
    (photon,) = entry_points(group="datajoint.codecs", name="photon")
    assert photon.dist.name == "dj-photon-codecs"
    with pytest.raises(ImportError, match="anscombe-transform is required"):
        photon.load()
    assert "photon" not in dj.codecs.list_codecs() and "zarr" in dj.codecs.list_codecs()


def test_a_subclass_of_the_adapted_class_is_refused(djstaged_schema, djstaged_local_store):
    """The adapter serves exactly dj-zarr-codecs' class: a subclass may write something else."""

    class DerivedZarrCodec(dj_zarr_codecs.ZarrArrayCodec):
        name = "zarr_derived"

    try:
        Table = declare(djstaged_schema, "Derived", "k : int32\n---\ndata : <zarr_derived@main>")
        for ask in ("store", "open"):
            with pytest.raises(NotParticipatingError) as raised:
                attempt(Table, {"k": 1}, methodcaller(ask, "data", ".zarr"))
            message = str(raised.value)
            assert raised.value.field == "data"
            assert "<zarr_derived>" in message and "DerivedZarrCodec" in message and "register_adapter" in message
        assert store_files(djstaged_local_store) == [] and len(Table()) == 0
    finally:
        dj.codecs.unregister_codec("zarr_derived")


class TestDjZarrCodecsBigEndian(SchemaAddressedConformance):
    """The kit, as a codec author subclasses it, against dj-zarr-codecs' <zarr@>, with a big-endian array.

    `write` takes the documented path, `dj_staged.create_zarr_array`, not dj-zarr-codecs' own call
    `zarr.create_array(store=staged.store(...), data=sample)`: Zarr stores a `>f8` array little-endian and keeps
    no trace of its byte order, so from what was written the row could only record `float64`, where insert1
    records the dtype it was given, `>f8`. Told the dtype, `create_zarr_array` records it as insert1 does.
    """

    codec = "<zarr@{store}>"

    def sample(self, tmp_path: Path) -> np.ndarray:
        return np.arange(600, dtype=">f8").reshape(30, 20)

    def write(self, staged, field, sample):
        z = dj_staged.create_zarr_array(staged, field, shape=sample.shape, dtype=sample.dtype)
        for start in range(0, sample.shape[0], 10):
            z[start : start + 10] = sample[start : start + 10]

    def normalize(self, fetched):
        return fetched[...]
