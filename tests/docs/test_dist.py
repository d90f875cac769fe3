"""Installing into your own project: ``make dist`` builds the sdist and the wheel, the wheel installs into a fresh
virtual environment and runs the demo from it; the version comes from one place; the README's extras are the
package's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from support.paths import ROOT

import dj_staged

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """``make dist`` into a temporary folder, with this interpreter (the virtual environment is not remade)."""
    out = tmp_path_factory.mktemp("dist")
    stamp = ROOT / ".venv" / ".installed"
    command = ["make", "-o", str(stamp), "dist", f"DIST={out}", f"BIN={Path(sys.executable).parent}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_make_dist_builds_the_sdist_and_the_wheel(dist):
    wheel = dist / f"dj_staged-{VERSION}-py3-none-any.whl"
    assert sorted(p.name for p in dist.iterdir()) == sorted([wheel.name, f"dj_staged-{VERSION}.tar.gz"])
    names = zipfile.ZipFile(wheel).namelist()
    assert "dj_staged/py.typed" in names and "dj_staged/demo.py" in names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
    entry_points = zipfile.ZipFile(wheel).read(f"dj_staged-{VERSION}.dist-info/entry_points.txt").decode()
    assert (
        "dj-staged = dj_staged.cli:main" in entry_points and "zarr = dj_staged.plugin_codecs:ZarrCodec" in entry_points
    )


def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_demo(dist, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    wheel = dist / f"dj_staged-{VERSION}-py3-none-any.whl"
    install = [str(python), "-m", "pip", "install", "--quiet", f"{wheel}[demo]"]  # from pip's cache where it can
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "VIRTUAL_ENV", "PYTHONPATH"))}
    version = subprocess.run(
        [str(python), "-c", "import dj_staged; print(dj_staged.__file__, dj_staged.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=clean,
    ).stdout.split()
    assert version[0].startswith(str(venv)) and version[1] == VERSION  # the wheel's copy, not this checkout's
    assert subprocess.run([str(venv / "bin" / "dj-staged"), "--help"], capture_output=True, env=clean).returncode == 0
    demo = subprocess.run(
        [str(python), "-m", "dj_staged.demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**clean, "DJ_STAGED_DEMO_MIB": "1"},  # the smallest size
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    rows = [line for line in demo.stdout.splitlines() if line.endswith(("ok", "MISMATCH"))]
    assert len(rows) == 8 and all(line.endswith("ok") for line in rows), demo.stdout
    assert demo.stderr == ""  # a first run prints only what the demo means to say


def test_the_version_comes_from_pyproject():
    assert dj_staged.__version__ == VERSION
    init = (ROOT / "src" / "dj_staged" / "__init__.py").read_text()
    assert VERSION not in init and 'version("dj-staged")' in init  # read from the installed metadata, not written
    named = set(re.findall(r"dj_staged-(\d+\.\d+\.\d+)", (ROOT / "README.md").read_text()))
    assert named == {VERSION}  # the README's install lines name the files make dist builds


def test_changelog_headings_agree_with_the_version():
    headings = re.findall(r"^## \[(.+?)\](?: - (.+))?$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0] == ("Unreleased", "")  # ongoing work, on top
    released = headings[1:]
    assert released, "the package's version has its heading"
    for version, date in released:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", date), f"[{version}] is released, with a date: {date!r}"
    versions = [tuple(int(n) for n in version.split(".")) for version, _ in released]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    assert released[0][0] == VERSION  # the newest release is the package's version, none is newer


def readme_extras() -> dict[str, list[str]]:
    """The README's extras table: extra → the package names it says the extra adds."""
    text = (ROOT / "README.md").read_text()
    section = text.split("The extras add what some stores and features need", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:-1] for line in section.splitlines()[2:]]
    return {cells[0].strip().strip("`"): re.findall(r"`([\w\[\],-]+)`", cells[1]) for cells in rows}


def names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def test_the_readme_extras_are_the_packages():
    table = {extra: names(listed) for extra, listed in readme_extras().items()}
    extras = PROJECT["optional-dependencies"]
    assert set(table) == {"(none)"} | (set(extras) - {"bench"})  # bench: this repository's benchmarks only
    postgres = {r for r in requires("datajoint") if "extra == 'postgres'" in r}
    assert table["(none)"] == names(PROJECT["dependencies"]) | names([r.split(";")[0] for r in postgres])
    for extra in set(table) - {"(none)"}:
        assert table[extra] == names(extras[extra]), extra
