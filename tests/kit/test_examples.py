"""The example third-party codec package runs the conformance kit, unmodified, in its own pytest session."""

from __future__ import annotations

from support.paths import ROOT
from support.pytest_runs import run_pytest

EXAMPLE = ROOT / "examples" / "minimal_codec"

KIT_TESTS = {
    "test_codec_admitted_by_staged_insert_gate",
    "test_staged_write_lands_at_canonical_path",
    "test_staged_insert_metadata_matches_encode",
    "test_staged_insert_fetch_roundtrip",
    "test_staged_cleanup_on_exception",
    "test_staged_write_is_leased_while_it_writes",
    "test_staged_primary_key_required",
}


def test_minimal_codec_example_passes_the_kit(tmp_path):
    run = run_pytest(EXAMPLE, tmp_path, pythonpath=[EXAMPLE / "src"])
    expected = {f"TestLinesCodec::{test}[{store}]" for test in KIT_TESTS for store in ("local", "s3")}
    assert set(run.outcomes) == expected, run.output
    assert set(run.outcomes.values()) == {"passed"}, run.failures
    assert run.returncode == 0
