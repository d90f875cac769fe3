"""``make peer``'s parts that can be checked quickly: the per-test report plugin and the comparison of modes.

The whole run (DataJoint's suite three times) is ``make peer`` itself; it is not part of ``make test``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap

from support.paths import TESTS
from support.pytest_runs import run_pytest

PEER = TESTS / "peer"
_spec = importlib.util.spec_from_file_location("djpeer_run", PEER / "run.py")
assert _spec is not None and _spec.loader is not None
peer = sys.modules["djpeer_run"] = importlib.util.module_from_spec(_spec)  # its dataclass looks itself up there
_spec.loader.exec_module(peer)

SUITE = """
import pytest

@pytest.fixture(params=["mysql", "postgresql"])
def backend(request):
    return request.param

def test_on_each_backend(backend):
    assert backend == "postgresql"

def test_passes():
    pass

def test_fails():
    assert False

@pytest.fixture
def broken():
    raise RuntimeError("setup")

def test_setup_error(broken):
    pass

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown")

def test_fails_then_teardown_error(broken_teardown):
    assert False

def test_skipped():
    pytest.skip("a sample skip, counted by the report like any other")
"""


def test_report_counts_as_pytest_does_and_leaves_out_mysql(tmp_path):
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(SUITE))
    report = tmp_path / "report.json"
    run = run_pytest(
        tmp_path / "test_sample.py", tmp_path, [PEER], args=["-p", "djpeer_report", f"--peer-report={report}"]
    )
    data = json.loads(report.read_text())
    assert "2 failed, 2 passed, 1 skipped, 1 deselected, 2 errors" in run.output
    assert data["counts"] == dict(passed=2, failed=2, error=2, skipped=1, xfailed=0, xpassed=0, deselected=1)
    assert data["exitstatus"] == 1
    assert {name.split("::")[1]: outcome for name, outcome in data["outcomes"].items()} == {
        "test_on_each_backend[postgresql]": "passed",
        "test_passes": "passed",
        "test_fails": "failed",
        "test_setup_error": "error",
        "test_fails_then_teardown_error": "failed+error",
        "test_skipped": "skipped",
    }


def test_differences_name_each_test_whose_outcome_is_not_the_same_everywhere():
    counts = dict(passed=2, failed=1, error=0, skipped=0, xfailed=0, xpassed=0, deselected=3)
    stock = peer.Result("stock", counts, {"a": "passed", "b": "failed", "c": "passed"}, 1)
    installed = peer.Result("installed", counts, {"a": "passed", "b": "failed", "c": "passed"}, 1)
    enabled = peer.Result("enabled", counts, {"a": "failed", "b": "failed"}, 1)
    assert peer.differences([stock, installed, enabled]) == {
        "a": {"stock": "passed", "installed": "passed", "enabled": "failed"},
        "c": {"stock": "passed", "installed": "passed", "enabled": "absent"},
    }
    assert peer.differences([stock, installed]) == {}
    assert stock.line() == "stock     2 passed, 1 failed, 0 errors, 0 skipped (3 deselected)"
