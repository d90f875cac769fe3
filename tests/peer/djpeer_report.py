"""pytest plugin of ``make peer`` (``-p djpeer_report --peer-report PATH``): what DataJoint's suite did, per test.

It leaves out the ``backend="mysql"`` half of DataJoint's backend-parametrized tests (there is no MySQL server
here: they would only fail to connect, and a failed connect leaves ``database.backend`` set to ``mysql`` for
the tests after it), and writes to ``PATH`` a JSON file: the counts pytest prints and each test's outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

COUNTED = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "deselected")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--peer-report PATH``: where the JSON report goes."""
    parser.addoption("--peer-report", required=True, help="write counts and per-test outcomes (JSON) here")


def pytest_configure(config: pytest.Config) -> None:
    """Register the recorder of this run."""
    config.pluginmanager.register(Recorder(config), "djpeer-recorder")


def _backend(item: pytest.Item) -> object:
    """The ``backend`` parameter of a parametrized test, None for others."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("backend") if callspec is not None else None


class Recorder:
    """Deselects the MySQL parametrizations, notes each test's outcome, writes the report at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.phases: dict[str, list[str]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Deselect the tests parametrized with ``backend="mysql"``."""
        mysql = [item for item in items if _backend(item) == "mysql"]
        if mysql:
            chosen = set(map(id, mysql))
            items[:] = [item for item in items if id(item) not in chosen]
            self.config.hook.pytest_deselected(items=mysql)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Note the category pytest gives each phase of each test (``passed``, ``failed``, ``error``, ...)."""
        category = self.config.hook.pytest_report_teststatus(report=report, config=self.config)[0]
        phases = self.phases.setdefault(report.nodeid, [])
        if category and category not in phases:
            phases.append(category)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write the counts and every test's outcome (the categories of its phases joined with ``+``)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        stats = reporter.stats if reporter is not None else {}
        counts = {name: len(stats.get(name, ())) for name in COUNTED}
        outcomes = {nodeid: "+".join(phases) or "passed" for nodeid, phases in sorted(self.phases.items())}
        report = {"exitstatus": int(exitstatus), "counts": counts, "outcomes": outcomes}
        Path(self.config.getoption("--peer-report")).write_text(json.dumps(report, indent=1) + "\n")
