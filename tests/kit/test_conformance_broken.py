"""The kit fails a codec whose finalize returns the wrong metadata, or whose adapter has an old protocol's shape,
and says which test and why (or what to change)."""

from __future__ import annotations

from support.paths import ROOT
from support.pytest_runs import run_pytest

EXAMPLE_SRC = ROOT / "examples" / "minimal_codec" / "src"

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


# Another package's <lines@>-like codec, given staged insert by an adapter written for dj-staged before 0.1.0
# (protocol version 1: the session, the field's name and the extension), and the same adapter brought up to date.
ADAPTED_MODULE = """
from datajoint.builtin_codecs.schema import SchemaCodec
from minimal_codec import LinesCodec

import dj_staged
from dj_staged.testing import SchemaAddressedConformance


class TheirLinesCodec(SchemaCodec):  # knows nothing of staged insert
    name = "their_lines"
    validate = LinesCodec.validate
    encode = LinesCodec.encode
    decode = LinesCodec.decode


class OldShapeStaging:
    def staged_handle(self, session, field, ext, *, mode, file_mode="wb"):
        raise AssertionError("not reached: the kit refuses the shape before any call")

    def finalize_staged(self, session, field):
        raise AssertionError("not reached")

    def cleanup_staged(self, session, field):
        raise AssertionError("not reached")


class UpdatedStaging(dj_staged.SchemaAddressedStaging):
    staged_modes = ("open",)

    def _enrich_staged_metadata(self, base, field):
        return LinesCodec._enrich_staged_metadata(self, base, field)


dj_staged.register_adapter(TheirLinesCodec, {adapter}())


class TestAdaptedLinesCodec(SchemaAddressedConformance):
    codec = "<their_lines@{{store}}>"
    stores = ("local",)

    def sample(self, tmp_path):
        return ["first line", "second line"]

    def write(self, staged, field, sample):
        with staged.open(field, ".txt") as f:
            for line in sample:
                f.write(line.encode() + b"\\n")
"""


def test_kit_fails_an_adapter_of_the_old_protocol_shape_with_one_message_that_says_what_to_change(tmp_path):
    module = tmp_path / "test_adapted_codec.py"
    module.write_text(ADAPTED_MODULE.format(adapter="OldShapeStaging"))
    run = run_pytest(module, tmp_path, pythonpath=[EXAMPLE_SRC])
    assert run.returncode == 1 and len(run.outcomes) == 7, run.output
    assert set(run.outcomes.values()) == {"failed"}, run.output
    messages = {failure.split("\n", 1)[0] for failure in run.failures.values()}
    assert len(messages) == 1, messages  # one message, the same for every test
    (message,) = messages
    assert "test_adapted_codec.OldShapeStaging" in message and "protocol version 1 (dj-staged before 0.1.0)" in message
    assert "staged_handle(session, field, ext, *, mode, file_mode='wb')" in message
    assert "protocol version 2 (dj_staged.PROTOCOL_VERSION)" in message
    assert "staged_handle(self, field, *, mode, file_mode='wb'), finalize_staged(self, field)" in message
    assert "missing 2 required positional arguments" not in run.output


def test_the_same_adapter_in_the_protocols_shape_passes_the_kit(tmp_path):
    module = tmp_path / "test_adapted_codec.py"
    module.write_text(ADAPTED_MODULE.format(adapter="UpdatedStaging"))
    run = run_pytest(module, tmp_path, pythonpath=[EXAMPLE_SRC])
    assert run.returncode == 0 and len(run.outcomes) == 7, run.output
    assert set(run.outcomes.values()) == {"passed"}, run.failures


def test_every_participant_of_this_package_speaks_the_protocol_version_it_announces():
    import datajoint as dj

    import dj_staged
    from dj_staged.codecs.zarr import DjZarrCodecsStaging
    from dj_staged.protocol import PROTOCOL_VERSION
    from dj_staged.testing.conformance import protocol_shape_problem

    assert dj_staged.PROTOCOL_VERSION == PROTOCOL_VERSION == 2
    participants = [dj_staged.participant_for(dj.codecs.get_codec(name)) for name in NAMES]
    assert None not in participants
    for codec, participant in zip([*NAMES, "zarr"], [*participants, DjZarrCodecsStaging()], strict=True):
        assert protocol_shape_problem(codec, participant) is None, codec


NAMES = ["object", "npy", "blob", "attach", "hash", "zarr"]
