"""The conformance kit run as a codec author runs it, against every codec we claim, on a local store and on S3."""

from __future__ import annotations

from pathlib import Path

import datajoint as dj
import numpy as np
import zarr
from datajoint.builtin_codecs.schema import SchemaCodec
from support.pytest_runs import run_pytest

import dj_staged
from dj_staged.testing import (
    HashAddressedConformance,
    NonParticipatingCodecConformance,
    PlacedConformance,
    SchemaAddressedConformance,
)


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Incompressible content, the same on every call (the kit asks for the sample more than once)."""
    return np.random.default_rng(seed).bytes(size)


def page_name(index: int) -> str:
    return f"page_{index:05d}"


EVERY_STORE = ("local", "s3", "gcs", "azure")  # the kit runs every codec on every store DataJoint supports


class PagesCodec(dj_staged.SchemaAddressedStaging, SchemaCodec):
    """A custom schema-addressed codec: a list of byte pages stored as a directory of files."""

    name = "pages_conformance"
    staged_modes = ("store",)

    def encode(self, value, *, key=None, context=None, store_name=None):
        schema, table, field, primary_key = self._extract_context(key, context)
        config = self._codec_config(key, context)
        path, _ = self._build_path(
            schema, table, field, primary_key, ext=".pages", store_name=store_name, config=config
        )
        fsmap = self._get_backend(store_name, config=config).get_fsmap(path)
        for index, page in enumerate(value):
            fsmap[page_name(index)] = page
        return {"path": path, "store": store_name, "pages": len(value), "size": sum(map(len, value))}

    def decode(self, stored, *, key=None, context=None):
        fsmap = self._get_backend(stored["store"], config=self._codec_config(key, context)).get_fsmap(stored["path"])
        return [fsmap[page_name(index)] for index in range(stored["pages"])]

    def _enrich_staged_metadata(self, base, field):
        return {"path": base["path"], "store": base["store"], "pages": base["item_count"], "size": base["size"]}


class FramedCodec(dj_staged.HashAddressedStaging, dj.Codec):
    """A custom hash-addressed codec: stores ``b"FRM1" + content`` through ``<hash@>``."""

    name = "framed_conformance"

    def get_dtype(self, is_store):
        return "<hash>"

    def encode(self, value, *, key=None, context=None, store_name=None):
        return b"FRM1" + value

    def decode(self, stored, *, key=None, context=None):
        return stored[4:]

    def _stored_prefix(self, field, content_size):
        return b"FRM1"


class NoProtocolCodec(dj.Codec):
    """A custom object-store codec that does not implement the staged-insert protocol."""

    name = "noprotocol_conformance"

    def get_dtype(self, is_store):
        return "<hash>"

    def encode(self, value, *, key=None, context=None, store_name=None):
        return value

    def decode(self, stored, *, key=None, context=None):
        return stored


class TestObjectFile(SchemaAddressedConformance):
    stores = EVERY_STORE
    codec = "<object@{store}>"

    def sample(self, tmp_path: Path) -> str:
        source = tmp_path / "sample.bin"
        source.write_bytes(random_bytes(20_000))
        return str(source)

    def write(self, staged, field, sample):
        with staged.open(field, ".bin") as f:
            f.write(Path(sample).read_bytes())

    def normalize(self, fetched):
        return fetched.read()


class TestObjectDirectory(SchemaAddressedConformance):
    stores = EVERY_STORE
    codec = "<object@{store}>"

    def sample(self, tmp_path: Path) -> str:
        folder = tmp_path / "folder"
        (folder / "sub").mkdir(parents=True, exist_ok=True)
        (folder / "a.txt").write_bytes(b"alpha")
        (folder / "sub" / "b.bin").write_bytes(random_bytes(5_000))
        return str(folder)

    def write(self, staged, field, sample):
        fsmap = staged.store(field)
        for path in sorted(Path(sample).rglob("*")):
            if path.is_file():
                fsmap[path.relative_to(sample).as_posix()] = path.read_bytes()

    def normalize(self, fetched):
        return {name: fetched.fsmap[name] for name in sorted(fetched.fsmap)}


class TestNpy(SchemaAddressedConformance):
    stores = EVERY_STORE
    codec = "<npy@{store}>"

    def sample(self, tmp_path: Path) -> np.ndarray:
        return np.arange(240, dtype=np.float32).reshape(12, 20)

    def write(self, staged, field, sample):
        with staged.open(field, ".npy") as f:
            np.save(f, sample, allow_pickle=False)

    def normalize(self, fetched):
        return fetched.load()


class TestZarr(SchemaAddressedConformance):
    stores = EVERY_STORE
    codec = "<zarr@{store}>"

    def sample(self, tmp_path: Path) -> np.ndarray:
        return np.arange(600, dtype=np.int16).reshape(30, 20)

    def write(self, staged, field, sample):
        z = zarr.open(staged.store(field, ".zarr"), mode="w", shape=sample.shape, chunks=(10, 20), dtype=sample.dtype)
        for start in range(0, sample.shape[0], 10):
            z[start : start + 10] = sample[start : start + 10]

    def normalize(self, fetched):
        return fetched[...]


class TestCustomSchemaAddressedCodec(SchemaAddressedConformance):
    stores = EVERY_STORE
    codec = "<pages_conformance@{store}>"

    def sample(self, tmp_path: Path) -> list[bytes]:
        return [random_bytes(3_000, seed=i) for i in range(4)]

    def write(self, staged, field, sample):
        fsmap = staged.store(field, ".pages")
        for index, page in enumerate(sample):
            fsmap[page_name(index)] = page


class TestBlobBytes(HashAddressedConformance):
    stores = EVERY_STORE
    codec = "<blob@{store}>"

    def sample(self, tmp_path: Path) -> bytes:
        return random_bytes(50_000)

    def write(self, staged, field, sample):
        with staged.open(field, ".bin") as f:
            for start in range(0, len(sample), 8_192):
                f.write(sample[start : start + 8_192])


class TestBlobArray(HashAddressedConformance):
    stores = EVERY_STORE
    codec = "<blob@{store}>"

    def sample(self, tmp_path: Path) -> np.ndarray:
        return np.frombuffer(random_bytes(8 * 4096), dtype=np.uint8).reshape(8, 4096)

    def write(self, staged, field, sample):
        with dj_staged.open_blob_array(staged, field, sample.shape, sample.dtype) as out:
            for start in range(0, sample.shape[-1], 1024):
                out.write(sample[:, start : start + 1024])


class TestAttach(HashAddressedConformance):
    stores = EVERY_STORE
    codec = "<attach@{store}>"

    def sample(self, tmp_path: Path) -> str:
        source = tmp_path / "notes.txt"
        source.write_bytes(random_bytes(30_000))
        return str(source)

    def write(self, staged, field, sample):
        staged.set_filename(field, Path(sample).name)
        with staged.open(field, ".txt") as f:
            f.write(Path(sample).read_bytes())

    def normalize(self, fetched):
        return Path(fetched).name, Path(fetched).read_bytes()


class TestHash(HashAddressedConformance):
    stores = EVERY_STORE
    codec = "<hash@{store}>"

    def sample(self, tmp_path: Path) -> bytes:
        return random_bytes(40_000)

    def write(self, staged, field, sample):
        with staged.open(field) as f:
            f.write(sample)


class TestCustomHashAddressedCodec(HashAddressedConformance):
    stores = EVERY_STORE
    codec = "<framed_conformance@{store}>"

    def sample(self, tmp_path: Path) -> bytes:
        return random_bytes(10_000)

    def write(self, staged, field, sample):
        with staged.open(field, ".frm") as f:
            f.write(sample)


class TestRejectsInTableBlob(NonParticipatingCodecConformance):
    stores = EVERY_STORE
    codec = "<blob>"


class TestRejectsInTableAttach(NonParticipatingCodecConformance):
    stores = EVERY_STORE
    codec = "<attach>"


class TestFilepathFile(PlacedConformance):
    """DataJoint's ``<filepath@>`` with a file written through ``open(field, path=...)``."""

    stores = EVERY_STORE
    codec = "<filepath@{store}>"

    def sample(self, tmp_path):
        return random_bytes(70_000)

    def write(self, staged, field, sample):
        with staged.open(field, **self.placement(staged)) as f:
            f.write(sample)

    def normalize(self, fetched):
        return fetched.read()


class TestFilepathFolder(PlacedConformance):
    """DataJoint's ``<filepath@>`` with a folder written through ``store(field, path=...)``."""

    stores = EVERY_STORE
    codec = "<filepath@{store}>"
    suffix = ".d"

    def sample(self, tmp_path):
        return {"a.bin": random_bytes(3_000), "nested/b.bin": random_bytes(5_000)}

    def write(self, staged, field, sample):
        folder = staged.store(field, **self.placement(staged))
        for name, data in sample.items():
            folder[name] = data

    def normalize(self, fetched):
        return {name: bytes(data) for name, data in fetched.fsmap.items()}


class TestRejectsCodecWithoutProtocol(NonParticipatingCodecConformance):
    stores = EVERY_STORE
    codec = "<noprotocol_conformance@{store}>"


def test_the_kit_fails_a_direct_codec_that_writes_without_a_lease(tmp_path):
    """A codec implementing the protocol itself but never calling ``field.lease()``: the kit's lease test catches it."""
    module = tmp_path / "test_unleased_codec.py"
    module.write_text(UNLEASED_MODULE)
    run = run_pytest(module, tmp_path)
    leased_test = "TestUnleasedCodec::test_staged_write_is_leased_while_it_writes[local]"
    assert run.outcomes[leased_test] == "failed", run.output
    assert "without a lease" in run.failures[leased_test]
    assert [name for name, outcome in run.outcomes.items() if outcome != "passed"] == [leased_test]


UNLEASED_MODULE = """
from dataclasses import dataclass

from datajoint.builtin_codecs.schema import SchemaCodec
from datajoint.storage import build_object_path

from dj_staged.testing import SchemaAddressedConformance


@dataclass
class State:
    path: str


class UnleasedCodec(SchemaCodec):
    name = "unleased_text"

    def encode(self, value, *, key=None, context=None, store_name=None):
        schema, table, field, primary_key = self._extract_context(key, context)
        config = self._codec_config(key, context)
        path, _ = self._build_path(schema, table, field, primary_key, ext=".txt", store_name=store_name, config=config)
        self._get_backend(store_name, config=config).put_buffer(value.encode(), path)
        return {"path": path, "store": store_name, "size": len(value.encode())}

    def decode(self, stored, *, key=None, context=None):
        backend = self._get_backend(stored["store"], config=self._codec_config(key, context))
        return backend.get_buffer(stored["path"]).decode()

    def staged_handle(self, field, *, mode, file_mode="wb"):
        path, _ = build_object_path(
            schema=field.schema, table=field.table_name, field=field.name, primary_key=field.primary_key,
            ext=field.ext, partition_pattern=None, token_length=8, schema_prefix=field.spec["schema_prefix"],
        )
        field.state = State(path)  # and no field.lease(path): the bug this test is about
        return field.backend.open(path, file_mode)

    def finalize_staged(self, field):
        return {"path": field.state.path, "store": field.store_name, "size": field.backend.size(field.state.path)}

    def cleanup_staged(self, field):
        if field.state is not None and field.backend.exists(field.state.path):
            field.backend.remove(field.state.path)


class TestUnleasedCodec(SchemaAddressedConformance):
    codec = "<unleased_text@{store}>"
    stores = ("local",)

    def sample(self, tmp_path):
        return "some text"

    def write(self, staged, field, sample):
        with staged.open(field, ".txt") as f:
            f.write(sample.encode())
"""
