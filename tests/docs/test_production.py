"""Nothing test-only in the installed package: no test adapter, no pytest outside the kit, light entry points."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path

import pytest
from support.paths import ROOT, SITE  # SITE: test-only stand-ins of dj-zarr-codecs and dj-photon-codecs

import dj_staged
from dj_staged.plugin_codecs import other_providers

SOURCE = Path(dj_staged.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_outside_the_kit_imports_pytest():
    modules = sorted(SOURCE.rglob("*.py"))
    importing = {str(p.relative_to(SOURCE)) for p in modules if "pytest" in imported_modules(p)}
    assert importing and all(path.startswith("testing/") for path in importing), importing


def test_only_the_dask_module_imports_dask():
    modules = sorted(SOURCE.rglob("*.py"))
    importing = {str(p.relative_to(SOURCE)) for p in modules if {"dask", "distributed"} & imported_modules(p)}
    assert importing == {"dask.py"}


def test_the_installed_package_registers_no_test_adapter():
    points = distribution("dj-staged").entry_points
    groups = {point.group for point in points}
    assert groups == {"console_scripts", "pytest11", "datajoint.codecs", "dj_staged.adapters"}
    (adapters,) = [point for point in points if point.group == "dj_staged.adapters"]
    assert adapters.value == "dj_staged.codecs:BUILT_IN"  # DataJoint's codecs' adapters: the package's own, no test's
    (faulty,) = entry_points(group="datajoint.storage", name="faulty")  # this suite's, from tests/entry_points
    assert faulty.dist.name == "dj-staged-test-adapters" and faulty.value == "support.faults:FaultyStorageAdapter"
    code = "from datajoint.storage_adapter import get_storage_adapter; print(get_storage_adapter('faulty'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "None"  # outside this suite the protocol does not exist


CODEC_LOOKUP = """
import json, sys
from importlib.metadata import entry_points
import datajoint as dj
codec = dj.codecs.get_codec("zarr")
loaded = sorted(sys.modules)
providers = [p for p in entry_points(group="datajoint.codecs", name="zarr") if not p.value.startswith("dj_staged.")]
expected = providers[0].load() if providers else sys.modules["dj_staged.codecs.zarr"].ZarrCodec
with open(sys.argv[1], "w") as out:  # not stdout: DataJoint logs there ("Failed to load codec ...")
    json.dump({"owner": f"{type(codec).__module__}:{type(codec).__qualname__}", "expected": type(codec) is expected,
               "modules": loaded}, out)
"""


@pytest.mark.parametrize("site", [[], [SITE]], ids=["alone", "with-dj-zarr-codecs"])
def test_the_codec_entry_point_loads_no_engine(site, tmp_path):
    """`zarr` resolves, by entry point, to ours alone, or to dj-zarr-codecs' class where it is installed."""
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*site, *filter(None, [os.getenv("PYTHONPATH")])]))}
    done = subprocess.run(
        [sys.executable, "-c", CODEC_LOOKUP, str(report)], capture_output=True, text=True, check=True, env=env
    )
    found = json.loads(report.read_text())
    assert found["expected"] is True
    if site or other_providers("zarr"):  # theirs: the class where their package defines it
        assert found["owner"] == "dj_zarr_codecs.codecs:ZarrArrayCodec"
    else:
        assert found["owner"] == "dj_staged.codecs.zarr:ZarrCodec"
    if site:  # dj-photon-codecs' stand-in failed to load, and DataJoint said so on stdout
        assert "Failed to load codec 'photon'" in done.stdout
    loaded = set(found["modules"])
    engine = ("dj_staged.session", "dj_staged.gc", "dj_staged.testing", "dj_staged.leases", "dj_staged.cli")
    assert sorted(m for m in loaded if m.startswith(engine)) == []
    assert not {"pytest", "_pytest", "dask", "distributed"} & loaded


DEMO_WITHOUT_PYTEST = """
import runpy, sys
for name in ("pytest", "_pytest"):
    sys.modules[name] = None  # `import pytest` now raises ImportError, as where pytest is not installed
runpy.run_module("dj_staged.demo", run_name="__main__")
"""


def test_demo_runs_without_pytest(tmp_path):
    env = {**os.environ, "DJ_STAGED_DEMO_MIB": "1"}  # the smallest size; its checks read the last row
    done = subprocess.run(
        [sys.executable, "-c", DEMO_WITHOUT_PYTEST], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.endswith(("ok", "MISMATCH"))]
    assert len(rows) >= 8 and all(line.endswith("ok") for line in rows), done.stdout
    assert done.stderr == ""  # `make demo` prints only its own lines: no warnings, no connection log
