"""Foreign codecs: another package's `zarr` row for row, and a codec dj-staged does not know refused by name.

The stand-in of dj-zarr-codecs (tests/foreign/site, test-only) goes on the path of child processes only: this
process keeps dj-staged's own `zarr`, so the `<zarr@>` and conformance tests run both ways.
"""

from __future__ import annotations

import json
import subprocess
import sys
from operator import methodcaller

import datajoint as dj
import numpy as np
import pytest
from datajoint.builtin_codecs.schema import SchemaCodec
from support.paths import FOREIGN, SITE, TESTS
from support.pytest_runs import run_pytest
from support.stores import store_files
from support.tables import attempt, declare

import dj_staged
from dj_staged.errors import NotParticipatingError


def test_zarr_and_conformance_suites_pass_with_dj_zarr_codecs_installed(tmp_path):
    targets = [TESTS / "codecs" / "test_zarr.py", TESTS / "kit" / "test_conformance.py", FOREIGN / "stand_in_checks.py"]
    run = run_pytest(targets, tmp_path, pythonpath=[SITE])
    assert run.returncode == 0 and set(run.outcomes.values()) == {"passed"}, run.failures or run.output
    ran = {name.split("::")[0] for name in run.outcomes}
    assert {"test_zarr", "TestZarr", "TestNpy", "TestBlobBytes", "TestDjZarrCodecsBigEndian"} <= ran
    assert "stand_in_checks::test_the_stand_in_owns_zarr" in run.outcomes  # `zarr` was the stand-in's there
    assert "stand_in_checks::test_a_plugin_that_fails_to_load_is_installed_beside_it" in run.outcomes
    kit = {f"TestDjZarrCodecsBigEndian::test_staged_insert_metadata_matches_encode[{s}]" for s in ("local", "s3")}
    assert kit <= set(run.outcomes)


ORDER_SCRIPT = """
import json, sys, warnings
from importlib.metadata import entry_points
site, where, first, report = sys.argv[1:5]
sys.path.insert(0, site) if where == "front" else sys.path.append(site)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # DataJoint's own warnings at import
    if first == "dj_staged":
        import dj_staged.codecs.zarr
    elif first == "dj_zarr_codecs":
        import dj_zarr_codecs
    import datajoint as dj
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    codec = dj.codecs.get_codec("zarr")
    import dj_staged
    participant = dj_staged.participant_for(codec)
(theirs,) = [p for p in entry_points(group="datajoint.codecs", name="zarr") if p.dist.name == "dj-zarr-codecs"]
with open(report, "w") as out:  # not stdout: DataJoint logs there ("Failed to load codec ...")
    json.dump({
        "owner": f"{type(codec).__module__}:{type(codec).__qualname__}",
        "entry_point_class": type(codec) is theirs.load(),
        "participant": type(participant).__name__,
        "warnings": [str(w.message) for w in caught],
    }, out)
"""

#: What DataJoint logs (to stdout) when it reads the entry points and the stand-in of dj-photon-codecs fails to load.
PHOTON_FAILED = "Failed to load codec 'photon' from dj_photon_codecs:PhotonCodec"


@pytest.mark.parametrize("first", ["datajoint", "dj_staged", "dj_zarr_codecs"])
@pytest.mark.parametrize("where", ["front", "back"])
def test_zarr_goes_to_the_other_package_in_every_order(where, first, tmp_path):
    """Whichever entry point DataJoint reads first and whichever package is imported first: theirs, silently.

    Theirs is the class their `zarr` entry point loads, wherever their package defines it (the real one in
    `dj_zarr_codecs.codecs`). The child reports through a file: DataJoint logs to stdout, here that another
    plugin (dj-photon-codecs' stand-in) failed to load, whenever it reads the entry points.
    """
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-c", ORDER_SCRIPT, str(SITE), where, first, str(report)],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(report.read_text())
    assert found == {
        "owner": "dj_zarr_codecs.codecs:ZarrArrayCodec",
        "entry_point_class": True,
        "participant": "DjZarrCodecsStaging",
        "warnings": [],
    }
    # importing dj_zarr_codecs first registers `zarr`, and DataJoint then never reads the entry points
    assert (PHOTON_FAILED in done.stdout) == (first != "dj_zarr_codecs"), done.stdout


def schema_codec(name: str, qualname: str) -> type:
    """A schema-addressed codec of a made-up package ``acme_arrays``: it writes one ``.stack`` file per value."""

    def encode(self, value, *, key=None, context=None, store_name=None):
        schema, table, field, primary_key = self._extract_context(key, context)
        config = self._codec_config(key, context)
        path, _ = self._build_path(
            schema, table, field, primary_key, ext=".stack", store_name=store_name, config=config
        )
        self._get_backend(store_name, config=config).put_buffer(value, path)
        return {"path": path, "store": store_name, "frames": len(value) // 16}

    def decode(self, stored, *, key=None, context=None):
        return self._get_backend(stored["store"], config=self._codec_config(key, context)).get_buffer(stored["path"])

    attributes = {"name": name, "encode": encode, "decode": decode, "__module__": "acme_arrays.codecs"}
    codec = type(qualname, (SchemaCodec,), {**attributes, "__qualname__": qualname})  # registers `name`
    return codec


@pytest.fixture
def acme(djstaged_schema, djstaged_local_store):
    """A table whose `data` is a codec of a package dj-staged does not know; the codec is unregistered after."""
    made = []

    def make(name: str, qualname: str):
        schema_codec(name, qualname)
        made.append(name)
        return declare(djstaged_schema, qualname.replace("Codec", ""), f"k : int32\n---\ndata : <{name}@main>")

    yield make
    for name in made:
        dj.codecs.unregister_codec(name)


def test_an_unknown_schema_addressed_codec_is_refused_by_name(acme, djstaged_local_store):
    Table = acme("acme_stack", "AcmeStackCodec")
    for ask in ("store", "open"):
        with pytest.raises(NotParticipatingError) as raised:
            attempt(Table, {"k": 1}, methodcaller(ask, "data", ".stack"))
        message = str(raised.value)
        assert raised.value.field == "data"
        assert "<acme_stack>" in message and "acme_arrays.AcmeStackCodec" in message
        assert "dj_staged.register_adapter" in message
    assert store_files(djstaged_local_store) == [] and len(Table()) == 0
    Table.insert1({"k": 2, "data": b"\x01" * 32})  # the codec itself works: it just does not take part
    assert (Table & {"k": 2}).fetch1("data") == b"\x01" * 32


def test_registering_an_adapter_by_name_makes_it_take_part(acme, djstaged_local_store):
    """The refusal's advice, followed: an adapter named "package:ClassName" gives it staged insert, row for row."""

    class AcmeVolumeStaging(dj_staged.SchemaAddressedStaging):
        staged_modes = ("open",)

        def _enrich_staged_metadata(self, base, field):
            return {"path": base["path"], "store": base["store"], "frames": base["size"] // 16}

    Table = acme("acme_volume", "AcmeVolumeCodec")
    dj_staged.register_adapter("acme_arrays:AcmeVolumeCodec", AcmeVolumeStaging())
    frames = np.arange(12, dtype="<i2").tobytes() * 4
    Table.insert1({"k": 1, "data": frames})
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 2
        with staged.open("data", ".stack") as f:
            f.write(frames)
    rows = {
        row["k"]: row for row in Table.connection.query(f"SELECT k, data FROM {Table.full_table_name}", as_dict=True)
    }
    ours, theirs = rows[2]["data"], rows[1]["data"]
    assert {k: v for k, v in ours.items() if k != "path"} == {k: v for k, v in theirs.items() if k != "path"}
    assert ours["path"].endswith(".stack") and (Table & {"k": 2}).fetch1("data") == frames
