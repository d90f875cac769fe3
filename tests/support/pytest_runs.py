"""Run pytest in a child process, as a codec author would, and read each test's outcome from its JUnit report."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PytestRun:
    """Outcome per test (``"passed"``, ``"failed"``, ``"error"``, ``"skipped"``), failure texts and the output."""

    outcomes: dict[str, str]
    failures: dict[str, str]
    output: str
    returncode: int


def run_pytest(
    target: Path | Sequence[Path],
    workdir: Path,
    pythonpath: Sequence[Path] = (),
    timeout: float = 600,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    unset: Sequence[str] = (),
) -> PytestRun:
    """Run ``pytest target...`` in a fresh interpreter with ``pythonpath`` prepended; nothing is installed.

    ``args`` are further command-line arguments, ``env`` further environment variables, ``unset`` variables
    taken out of the environment.
    """
    report = workdir / "report.xml"
    environment = {**os.environ, **(env or {})}
    for name in ("PYTEST_ADDOPTS", *unset):
        environment.pop(name, None)
    environment["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), *filter(None, [environment.get("PYTHONPATH")])])
    targets = [target] if isinstance(target, Path) else list(target)
    command = [sys.executable, "-m", "pytest", *map(str, targets), "-q", "-p", "no:cacheprovider", *args]
    command += [f"--junitxml={report}", f"--basetemp={workdir / 'basetemp'}"]
    done = subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True, timeout=timeout)
    outcomes, failures = {}, {}
    cases = ET.parse(report).getroot().iter("testcase") if report.exists() else ()  # none if pytest did not start
    for case in cases:
        name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcomes[name] = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcomes[name] = {"failure": "failed"}.get(kind, kind)
                failures[name] = f"{found.get('message')}\n{found.text or ''}"
    return PytestRun(outcomes, failures, done.stdout + done.stderr, done.returncode)
