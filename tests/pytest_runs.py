"""Run pytest in a child process, as a codec author would, and read each test's outcome from its JUnit report."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PytestRun:
    """Outcome per test (``"passed"``, ``"failed"``, ``"error"``, ``"skipped"``), failure texts and the output."""

    outcomes: dict[str, str]
    failures: dict[str, str]
    output: str
    returncode: int


def run_pytest(target: Path, workdir: Path, pythonpath: list[Path] = (), timeout: float = 600) -> PytestRun:
    """Run ``pytest target`` in a fresh interpreter with ``pythonpath`` prepended; nothing is installed."""
    report = workdir / "report.xml"
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "pytest", str(target), "-q", "-p", "no:cacheprovider"]
    command += [f"--junitxml={report}", f"--basetemp={workdir / 'basetemp'}"]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    outcomes, failures = {}, {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcomes[name] = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcomes[name] = {"failure": "failed"}.get(kind, kind)
                failures[name] = f"{found.get('message')}\n{found.text or ''}"
    return PytestRun(outcomes, failures, done.stdout + done.stderr, done.returncode)
