"""The dj-staged conformance kit, run against <lines@> on a local store and on S3."""

import minimal_codec  # noqa: F401  (defining the codec registers <lines>)

from dj_staged.testing import SchemaAddressedConformance


class TestLinesCodec(SchemaAddressedConformance):
    codec = "<lines@{store}>"

    def sample(self, tmp_path):
        return ["first line", "second line", "third line"]

    def write(self, staged, field, sample):
        with staged.open(field, ".txt") as f:
            for line in sample:
                f.write(line.encode() + b"\n")
