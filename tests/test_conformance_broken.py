"""The kit fails a codec whose finalize returns the wrong metadata, and says which test and why."""

from __future__ import annotations

from pathlib import Path

from pytest_runs import run_pytest

EXAMPLE_SRC = Path(__file__).resolve().parents[1] / "examples" / "minimal_codec" / "src"

# The example's <lines@> codec with one bug: staged finalize counts one line too many.
BROKEN_MODULE = """
from minimal_codec import LinesCodec

from dj_staged.testing import SchemaAddressedConformance


class OffByOneLinesCodec(LinesCodec):
    name = "lines_off_by_one"

    def _enrich_staged_metadata(self, base, field):
        metadata = super()._enrich_staged_metadata(base, field)
        return {**metadata, "lines": metadata["lines"] + 1}


class TestOffByOneLinesCodec(SchemaAddressedConformance):
    codec = "<lines_off_by_one@{store}>"
    stores = ("local",)

    def sample(self, tmp_path):
        return ["first line", "second line"]

    def write(self, staged, field, sample):
        with staged.open(field, ".txt") as f:
            for line in sample:
                f.write(line.encode() + b"\\n")
"""


def test_kit_fails_codec_whose_finalize_returns_wrong_metadata(tmp_path):
    module = tmp_path / "test_broken_codec.py"
    module.write_text(BROKEN_MODULE)
    run = run_pytest(module, tmp_path, pythonpath=[EXAMPLE_SRC])
    metadata_test = "TestOffByOneLinesCodec::test_staged_insert_metadata_matches_encode[local]"
    assert run.returncode == 1, run.output
    assert {name for name, outcome in run.outcomes.items() if outcome != "passed"} == {metadata_test}, run.output
    assert len(run.outcomes) == 7
    assert "'lines': 3" in run.failures[metadata_test] and "'lines': 2" in run.failures[metadata_test]
