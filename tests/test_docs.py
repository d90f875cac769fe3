"""Every code block in docs/*.md and README.md runs here, so the docs cannot drift from the code.

``spec.md`` runs as one script (blocks in order, one namespace) with ``schema``
bound to a fresh schema and the local store ``main`` as ``stores.default``.
``codec-authors.md`` defines codecs and conformance suites: its blocks are
concatenated into a test module and run with pytest in a child process, kit included.

README.md: each Python block runs on its own, as written, in a fresh namespace. A
block that uses a table or values the README leaves out says so in its first line,
``# needs: Recording, big_array (fixture readme_recording)``, and the fixture of that
name supplies exactly those names. Any other block is marked in the line before it:

- ``<!-- docs-test: skip — reason -->``: not run, and the reason says why;
- ``<!-- docs-test: same-as PATH -->``: the same code as the file PATH, which a test runs;
- ``<!-- docs-test: datajoint.json -->``, ``secrets``, ``environment``: the configuration
  examples, with which a child process connects to the test's PostgreSQL and S3 servers
  and stages a row into both stores.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import datajoint as dj
import numpy as np
import pytest
from conftest import declare
from pytest_runs import run_pytest
from support.s3 import s3_client

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
RUN_AS_TEST_MODULE = {"codec-authors.md"}

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)#]+)(#[^)]*)?\)")


def code_blocks(doc: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block in ``doc``."""
    return FENCE.findall(doc.read_text())


def all_docs() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_docs_exist_and_every_block_is_python():
    assert {doc.name for doc in all_docs()} >= {"spec.md", "codec-authors.md"}
    for doc in all_docs():
        languages = [language for language, _ in code_blocks(doc)]
        assert languages, f"{doc.name} has no code block"
        assert set(languages) == {"python"}, f"{doc.name}: only python blocks, which this suite runs"


@pytest.mark.parametrize("doc", [d for d in all_docs() if d.name not in RUN_AS_TEST_MODULE], ids=lambda d: d.name)
def test_doc_blocks_run_as_one_script(doc, dj_schema, dj_local_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    registered = set(dj.codecs.list_codecs())
    namespace = {"schema": dj_schema, "__name__": f"docs_{doc.stem}"}
    try:
        with dj.config.override(download_path=str(tmp_path / "downloads")):
            for number, (_, code) in enumerate(code_blocks(doc), start=1):
                exec(compile(code, f"{doc.name} block {number}", "exec"), namespace)
    finally:
        for name in set(dj.codecs.list_codecs()) - registered:
            dj.codecs.unregister_codec(name)


@pytest.mark.parametrize("name", sorted(RUN_AS_TEST_MODULE))
def test_doc_blocks_run_as_a_test_module(name, tmp_path):
    module = tmp_path / f"test_doc_{Path(name).stem.replace('-', '_')}.py"
    module.write_text("\n\n".join(code for _, code in code_blocks(DOCS / name)))
    run = run_pytest(module, tmp_path)
    assert run.returncode == 0 and set(run.outcomes.values()) == {"passed"}, run.failures or run.output
    suites = set(re.findall(r"^class (Test\w+)\(", module.read_text(), re.MULTILINE))
    assert {case.split("::")[0] for case in run.outcomes} == suites, "every suite in the doc ran"


@pytest.mark.parametrize("doc", [*all_docs(), ROOT / "README.md"], ids=lambda d: d.name)
def test_relative_links_resolve(doc):
    for target, _ in LINK.findall(doc.read_text()):
        if "://" not in target:
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


# ---------------------------------------------------------------- README.md

BLOCK = re.compile(r"^(?P<indent> *)```(?P<language>\w*)\n(?P<code>.*?)^(?P=indent)```$", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!-- docs-test: (?P<kind>[\w.-]+)(?: — (?P<reason>.+?))?(?: (?P<path>[\w./-]+))? -->")
NEEDS = re.compile(r"# needs: (?P<names>\w+(?:, \w+)*) \(fixture (?P<fixture>readme_\w+)\)")
CONFIG_KINDS = ("datajoint.json", "secrets", "environment")


@dataclass
class Block:
    """A fenced block of README.md: where it starts, its language and code, and how the suite treats it."""

    line: int
    language: str
    code: str
    kind: str  # "run", "skip", "same-as" or one of CONFIG_KINDS
    reason: str = ""
    path: str = ""

    @property
    def needs(self) -> tuple[list[str], str] | None:
        """The names the block uses without defining them, and the fixture that supplies them."""
        first = self.code.splitlines()[0] if self.code else ""
        found = NEEDS.fullmatch(first)
        return (found["names"].split(", "), found["fixture"]) if found else None


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for found in BLOCK.finditer(text):
        line = text.count("\n", 0, found.start()) + 1
        before = text[: found.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        code = textwrap.dedent(found["code"])
        marker = MARKER.fullmatch(before)
        if marker is None:
            blocks.append(Block(line, found["language"], code, "run"))
        else:
            reason, path = marker["reason"] or "", marker["path"] or ""
            blocks.append(Block(line, found["language"], code, marker["kind"], reason, path))
    return blocks


def readme_block(kind: str) -> Block:
    (block,) = [b for b in readme_blocks() if b.kind == kind]
    return block


def test_every_readme_block_runs_or_says_why_not():
    blocks = readme_blocks()
    assert README.read_text().count("```") == 2 * len(blocks), "every fence is parsed"
    for block in blocks:
        where = f"README.md line {block.line}"
        if block.kind == "run":
            assert block.language == "python", f"{where}: a {block.language or 'plain'} block needs a docs-test marker"
            if "# needs:" in block.code:
                assert block.needs is not None, f"{where}: '# needs: A, B (fixture readme_x)' on the first line"
        elif block.kind == "skip":
            assert len(block.reason) > 10, f"{where}: a skipped block says why"
        elif block.kind == "same-as":
            assert (ROOT / block.path).is_file(), f"{where}: {block.path} does not exist"
        else:
            assert block.kind in CONFIG_KINDS, f"{where}: unknown docs-test marker {block.kind!r}"
    assert sorted(b.kind for b in blocks if b.kind in CONFIG_KINDS) == sorted(CONFIG_KINDS)
    assert sum(b.kind == "run" for b in blocks) >= 8


RUN = [b for b in readme_blocks() if b.kind == "run" and b.language == "python"]


@pytest.mark.parametrize("block", RUN, ids=[f"README.md:{b.line}" for b in RUN])
def test_readme_python_block_runs_as_written(block, request, dj_local_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"readme_line_{block.line}"}
    if block.needs is not None:
        names, fixture = block.needs
        supplied = request.getfixturevalue(fixture)
        assert sorted(supplied) == sorted(names), f"{fixture} supplies what the block says it needs"
        namespace.update(supplied)
    registered = set(dj.codecs.list_codecs())
    try:
        with dj.config.override(download_path=str(tmp_path / "downloads")):
            exec(compile(block.code, f"README.md line {block.line}", "exec"), namespace)
    finally:
        for name in set(dj.codecs.list_codecs()) - registered:
            dj.codecs.unregister_codec(name)


def test_readme_block_is_the_file_it_names():
    blocks = [b for b in readme_blocks() if b.kind == "same-as"]
    assert blocks
    for block in blocks:
        module = ast.parse((ROOT / block.path).read_text())
        body = module.body[1:] if ast.get_docstring(module) else module.body
        assert ast.dump(ast.Module(body, [])) == ast.dump(ast.parse(block.code)), f"README.md line {block.line}"


FRAME = np.full((512, 512), 7, dtype="uint16")


@pytest.fixture
def readme_recording(dj_schema, dj_local_store):
    """Usage: a table with an ``<npy@>`` and an ``<object@>`` field, an array, and a camera."""
    definition = "recording_id : int32\n---\nwaveform : <npy@>\nraw : <object@>"
    return {
        "Recording": declare(dj_schema, "Recording", definition),
        "big_array": np.linspace(0.0, 1.0, 100_000),
        "acquire_frame": lambda: FRAME,
    }


@pytest.fixture
def readme_artifact(dj_schema, dj_local_store):
    """Hash-addressed codecs: a ``<blob@>`` field and a producer of raw chunks."""
    return {
        "Artifact": declare(dj_schema, "Artifact", "artifact_id : int32\n---\npayload : <blob@>"),
        "producer": [f"chunk {i} ".encode() * 1000 for i in range(8)],
    }


@pytest.fixture
def readme_traces(dj_schema, dj_local_store):
    """Streaming an array into ``<blob@>``: 64 channels arriving in blocks."""
    rng = np.random.default_rng(0)
    return {
        "Recording": declare(dj_schema, "Recording", "recording_id : int32\n---\ntraces : <blob@>"),
        "n_samples": 1000,
        "acquisition": [rng.standard_normal((64, 250)) for _ in range(4)],
    }


@pytest.fixture
def readme_imaging(dj_schema, dj_local_store):
    """``<zarr@>``: the schema the block declares its table in, frames in memory, and a camera."""
    return {
        "schema": dj_schema,
        "frames": np.arange(50 * 64 * 64, dtype="uint16").reshape(50, 64, 64),
        "acquire_frame": lambda: FRAME,
    }


@pytest.fixture
def readme_trials(dj_schema, dj_local_store):
    """Many rows: a trial table and the segments of an acquisition."""
    definition = "session_id : int32\ntrial : int32\n---\nsignal : <npy@>"
    return {
        "Trial": declare(dj_schema, "Trial", definition),
        "acquisition": [np.arange(100.0) * i for i in range(5)],
    }


@pytest.fixture
def readme_dask(dj_schema, dj_local_store):
    """Dask: a table with a Zarr field, and the function computing one block of a volume."""

    def reconstruct(block_info=None):
        shape = block_info[None]["chunk-shape"]
        return np.full(shape, block_info[None]["chunk-location"][0], dtype="uint32")

    return {"Scan": declare(dj_schema, "Scan", "scan_id : int32\n---\nvolume : <zarr@>"), "reconstruct": reconstruct}


@pytest.fixture
def readme_populate(dj_schema, dj_local_store):
    """Dask under populate: the schema, a source table with two keys, and a lazy volume per key."""
    import dask.array as da

    Source = declare(dj_schema, "Source", "source_id : int32")
    Source.insert([{"source_id": 1}, {"source_id": 2}])

    def reconstruct(key):
        return da.full((8, 32, 32), key["source_id"], chunks=(2, 32, 32), dtype="uint16")

    return {"schema": dj_schema, "Source": Source, "reconstruct": reconstruct}


@pytest.fixture
def readme_schema(dj_schema, dj_local_store):
    """A schema whose stores are the local store ``main``."""
    return {"schema": dj_schema}


# ---------------------------------------------------------------- the configuration examples

# what a real server must change in the README's examples, and the README's value of each
PLACEHOLDERS = {
    ("database", "host"): "db.lab.example.org",
    ("stores", "main", "location"): "/data/datajoint",
    ("stores", "raw", "endpoint"): "s3.lab.example.org:9000",
    ("stores", "raw", "secure"): True,
}

CHILD = '''
import json
import uuid

import numpy as np
import datajoint as dj

import dj_staged

schema = dj.Schema(f"readme_{uuid.uuid4().hex[:10]}")
try:
    Take = schema(type("Take", (dj.Manual,), {"definition": """
        take_id : int32
        ---
        frames : <npy@>    # stores.default
        raw : <blob@raw>   # the S3 store
        """}))
    with dj_staged.staged_insert1(Take) as staged:
        staged.rec["take_id"] = 1
        with staged.open("frames", ".npy") as f:
            np.save(f, np.arange(5))
        with staged.open("raw", ".bin") as f:
            f.write(b"raw bytes")
    row = (Take & {"take_id": 1}).fetch1()
    print(json.dumps({
        "user": dj.conn().conn_info["user"],
        "stores": dict(dj.config.stores),
        "frames": np.asarray(row["frames"]).tolist(),
        "raw": row["raw"].decode(),
    }))
finally:
    schema.drop(prompt=False)
'''


@pytest.fixture
def lab_servers(dj_connection, dj_s3_server):
    """The README's database user ``alice`` and bucket ``lab-raw``, on the test's own servers."""
    if not dj_connection.query("SELECT 1 FROM pg_roles WHERE rolname = 'alice'").fetchone():
        dj_connection.query("CREATE ROLE alice LOGIN SUPERUSER")
    server = dj_s3_server
    client = s3_client({"endpoint": server.endpoint, "access_key": server.access_key, "secret_key": server.secret_key})
    if "lab-raw" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket="lab-raw")
    return client


def pointed_at(config: dict, dj_postgres, dj_s3_server, location: Path) -> dict:
    """The README's configuration with each placeholder, checked to be the README's, replaced by a test server."""
    real = {
        ("database", "host"): dj_postgres.host,
        ("stores", "main", "location"): str(location),
        ("stores", "raw", "endpoint"): dj_s3_server.endpoint,
        ("stores", "raw", "secure"): False,  # moto speaks plain HTTP
    }
    for keys, placeholder in PLACEHOLDERS.items():
        *parents, last = keys
        holder = config
        for key in parents:
            holder = holder[key]
        assert holder[last] == placeholder, f"README example changed at {'.'.join(keys)}: update PLACEHOLDERS"
        holder[last] = real[keys]
    return config


def without_settings() -> dict[str, str]:
    """This process's environment without DataJoint settings or AWS credentials: the child gets only the README's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "AWS_"))}


def run_child(cwd: Path, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "No datajoint.json found" not in done.stderr and "Failed to load config" not in done.stderr, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def objects_in(client, location: Path) -> tuple[list[str], list[str]]:
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="lab-raw", Prefix="datajoint/").get("Contents", [])]
    files = [str(p.relative_to(location)) for p in location.rglob("*") if p.is_file()]
    return keys, files


def test_readme_datajoint_json_and_secrets_connect(dj_postgres, dj_s3_server, lab_servers, tmp_path):
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)  # DataJoint looks for datajoint.json up to the repository root
    (project / "analysis").mkdir()
    location = tmp_path / "store"
    location.mkdir()
    config = pointed_at(json.loads(readme_block("datajoint.json").code), dj_postgres, dj_s3_server, location)
    (project / "datajoint.json").write_text(json.dumps(config))
    subprocess.run(["bash", "-e", "-c", readme_block("secrets").code], cwd=project, check=True)
    assert (project / ".secrets" / ".gitignore").read_text() == "*\n"
    found = run_child(project / "analysis", without_settings())  # from a subfolder, as in a project
    assert found["user"] == "alice"  # from .secrets/database.user
    raw = found["stores"]["raw"]
    assert (raw["access_key"], raw["secret_key"]) == ("AKIAEXAMPLEKEY", "example-secret")  # from .secrets/
    assert found["frames"] == [0, 1, 2, 3, 4] and found["raw"] == "raw bytes"
    keys, files = objects_in(lab_servers, location)
    assert any("/_hash/" in k for k in keys) and any(f.startswith("_schema/") for f in files)


def test_readme_environment_variables_connect(dj_postgres, dj_s3_server, lab_servers, tmp_path):
    secrets = {"LAB_DB_PASSWORD": "db-password", "LAB_S3_KEY": "testing", "LAB_S3_SECRET": "testing"}
    done = subprocess.run(
        ["bash", "-e", "-c", readme_block("environment").code + "\nenv -0"],
        env={"PATH": os.environ["PATH"], **secrets},
        capture_output=True,
        check=True,
    )
    exported = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    exported = {k: v for k, v in exported.items() if k.startswith(("DJ_", "AWS_"))}
    database = ["DJ_BACKEND", "DJ_HOST", "DJ_PORT", "DJ_USER", "DJ_PASS"]
    aws = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert sorted(exported) == sorted(["DJ_IGNORE_CONFIG_FILE", *database, "DJ_STORES", *aws])
    location = tmp_path / "store"
    location.mkdir()
    settings = {"database": {"host": exported["DJ_HOST"]}, "stores": json.loads(exported["DJ_STORES"])}
    settings = pointed_at(settings, dj_postgres, dj_s3_server, location)
    exported |= {"DJ_HOST": settings["database"]["host"], "DJ_STORES": json.dumps(settings["stores"])}
    workdir = tmp_path / "job"  # no datajoint.json anywhere up to the repository root
    (workdir / ".git").mkdir(parents=True)
    found = run_child(workdir, {**without_settings(), **exported})
    assert found["user"] == "alice" and "access_key" not in found["stores"]["raw"]  # the AWS chain
    assert found["frames"] == [0, 1, 2, 3, 4] and found["raw"] == "raw bytes"
    keys, files = objects_in(lab_servers, location)
    assert any("/_hash/" in k for k in keys) and any(f.startswith("_schema/") for f in files)
