"""Where the test suite's files are, and the path its child processes get.

``tests/`` (this package's parent) holds the ``support`` package and the ``soak`` package that child
processes import by name; ``tests/entry_points/`` holds the test-only entry points (the ``faulty`` storage
protocol of :mod:`support.faults`), which the installed package does not register. The root ``conftest.py``
puts it on ``sys.path`` before DataJoint discovers storage adapters (on first use of a store, never at
import); a child process gets both through ``PYTHONPATH`` (:data:`TEST_PYTHONPATH`).
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent  # the repository
ENTRY_POINTS = TESTS / "entry_points"
FOREIGN = TESTS / "foreign"  # another package's files: a stand-in of dj-zarr-codecs, a host project
SITE = FOREIGN / "site"  # the stand-ins, for a child's path
TEST_PYTHONPATH = [str(TESTS), str(ENTRY_POINTS)]
