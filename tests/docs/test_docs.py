"""Every code block of README.md and docs/*.md runs here as a reader runs it, so the docs cannot drift from the code.

README.md and spec.md: the blocks run in order in one fresh interpreter (a child process), each Python block
``exec``'d in one namespace that starts empty, as if pasted; nothing is injected. The child is configured only as
the README's *Connect your database and stores* section says: the environment block is run by bash, with its
placeholders (host, database, local path, bucket, S3 endpoint) replaced by this suite's PostgreSQL (a fresh
database for each document), a temporary folder and moto's S3 server. The README's shell blocks run in that
order too, by bash from the root of the repository, with the same environment (``dj-staged``, ``pip`` and
``pytest`` from this interpreter's folder); a ``text`` block marked ``output`` or ``output-head`` is what the
shell block before it printed, with times, host, process id and sizes aside.

codec-authors.md: its blocks, in order, are one pytest module, run in a child process as the page says.

Blocks that do not run are marked in the line before them:

- ``<!-- docs-test: skip — reason -->``: not run, and the reason says why;
- ``<!-- docs-test: same-as PATH -->``: the same code as the file PATH, which a block or a test runs;
- ``<!-- docs-test: datajoint.json -->``, ``secrets``, ``environment``: the configuration examples, with which a
  child process connects to the test's PostgreSQL and S3 servers and stages a row into both stores;
- ``<!-- docs-test: output — reason -->``, ``output-head``: the output of the shell block before it (all of it, or
  its first lines).
"""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.paths import ROOT
from support.pytest_runs import run_pytest
from support.s3 import s3_client

DOCS = ROOT / "docs"
README = ROOT / "README.md"
RUN_AS_TEST_MODULE = {"codec-authors.md"}

BLOCK = re.compile(r"^(?P<indent> *)```(?P<language>\w*)\n(?P<code>.*?)^(?P=indent)```$", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!-- docs-test: (?P<kind>[\w.-]+)(?: — (?P<reason>.+?))?(?: (?P<path>[\w./-]+))? -->")
LINK = re.compile(r"\]\(([^)#]+)(#[^)]*)?\)")
CONFIG_KINDS = ("datajoint.json", "secrets", "environment", "cloud-stores.json")
OUTPUT_KINDS = ("output", "output-head")

# the README's example host and process id in its example output, and what the real ones are replaced by
EXAMPLE_HOST, EXAMPLE_PID = "lab-pc", "48213"


@dataclass
class Block:
    """A fenced block of a document: where it starts, its language and code, and how the suite treats it."""

    doc: str
    line: int
    language: str
    code: str
    kind: str  # "run", "skip", "same-as", one of CONFIG_KINDS or OUTPUT_KINDS
    reason: str = ""
    path: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc} line {self.line}"


def blocks_of(doc: Path) -> list[Block]:
    """Every fenced block of ``doc``, with the marker in the line before it, if any."""
    text = doc.read_text()
    blocks = []
    for found in BLOCK.finditer(text):
        line = text.count("\n", 0, found.start()) + 1
        before = text[: found.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        code = textwrap.dedent(found["code"])
        marker = MARKER.fullmatch(before)
        if marker is None:
            blocks.append(Block(doc.name, line, found["language"], code, "run"))
        else:
            reason, path = marker["reason"] or "", marker["path"] or ""
            blocks.append(Block(doc.name, line, found["language"], code, marker["kind"], reason, path))
    return blocks


def config_block(kind: str) -> Block:
    (block,) = [b for b in blocks_of(README) if b.kind == kind]
    return block


def all_docs() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


# ---------------------------------------------------------------- what every document holds


def test_every_readme_block_runs_or_says_why_not():
    blocks = blocks_of(README)
    assert README.read_text().count("```") == 2 * len(blocks), "every fence is parsed"
    previous = None
    for block in blocks:
        where = block.where
        if block.kind == "run":
            assert block.language in ("python", "bash"), f"{where}: a {block.language or 'plain'} block needs a marker"
            assert "# needs:" not in block.code, f"{where}: a block defines what it uses"
        elif block.kind == "skip":
            assert len(block.reason) > 10, f"{where}: a skipped block says why"
        elif block.kind == "same-as":
            assert (ROOT / block.path).is_file(), f"{where}: {block.path} does not exist"
        elif block.kind in OUTPUT_KINDS:
            assert block.language == "text", f"{where}: output is a text block"
            assert previous is not None and previous.kind == "run" and previous.language == "bash", where
        else:
            assert block.kind in CONFIG_KINDS, f"{where}: unknown docs-test marker {block.kind!r}"
        previous = block
    assert sorted(b.kind for b in blocks if b.kind in CONFIG_KINDS) == sorted(CONFIG_KINDS)
    assert sum(b.kind == "run" and b.language == "python" for b in blocks) >= 15
    assert sum(b.kind == "run" and b.language == "bash" for b in blocks) >= 3


def test_readme_names_one_thing_each():
    """A table or a function is defined once, and no other statement of the tutorial rebinds its name."""
    defined: dict[str, str] = {}
    assigned: dict[str, str] = {}
    for block in blocks_of(README):
        if block.kind != "run" or block.language != "python":
            continue
        for node in ast.parse(block.code).body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                assert node.name not in defined, f"{node.name}: {defined.get(node.name)} and {block.where}"
                defined[node.name] = block.where
            for target in ast.walk(node):
                if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store):
                    assigned.setdefault(target.id, block.where)
    assert len(defined) >= 12
    assert not set(defined) & set(assigned), {name: assigned[name] for name in set(defined) & set(assigned)}


def test_docs_exist_and_every_block_runs():
    assert {doc.name for doc in all_docs()} >= {"spec.md", "codec-authors.md"}
    for doc in all_docs():
        blocks = blocks_of(doc)
        assert blocks, f"{doc.name} has no code block"
        assert {(b.kind, b.language) for b in blocks} == {("run", "python")}, f"{doc.name}: Python blocks, all run"


@pytest.mark.parametrize("doc", [*all_docs(), README], ids=lambda d: d.name)
def test_relative_links_resolve(doc):
    for target, _ in LINK.findall(doc.read_text()):
        if "://" not in target:
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_readme_block_is_the_file_it_names():
    blocks = [b for b in blocks_of(README) if b.kind == "same-as"]
    assert blocks
    for block in blocks:
        module = ast.parse((ROOT / block.path).read_text())
        body = module.body[1:] if ast.get_docstring(module) else module.body
        assert ast.dump(ast.Module(body, [])) == ast.dump(ast.parse(block.code)), block.where


# ---------------------------------------------------------------- the configuration examples

# what a real server must change in the README's examples, and the README's value of each
PLACEHOLDERS = {
    ("database", "host"): "db.lab.example.org",
    ("database", "name"): "lab",
    ("stores", "main", "location"): "/data/datajoint",
    ("stores", "raw", "endpoint"): "s3.lab.example.org:9000",
    ("stores", "raw", "bucket"): "lab-raw",
    ("stores", "raw", "secure"): True,
}


@dataclass
class Lab:
    """The test's servers as the README's placeholders: a fresh database and bucket, a store folder."""

    host: str
    database: str
    location: Path
    endpoint: str
    bucket: str
    client: object

    def real(self) -> dict:
        return {
            ("database", "host"): self.host,
            ("database", "name"): self.database,
            ("stores", "main", "location"): str(self.location),
            ("stores", "raw", "endpoint"): self.endpoint,
            ("stores", "raw", "bucket"): self.bucket,
            ("stores", "raw", "secure"): False,  # moto speaks plain HTTP
        }

    def objects(self) -> tuple[list[str], list[str]]:
        """The keys in the bucket and the files in the store folder."""
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix="datajoint/").get("Contents", [])
        files = [str(p.relative_to(self.location)) for p in self.location.rglob("*") if p.is_file()]
        return [o["Key"] for o in listed], files


@pytest.fixture
def lab(djstaged_connection, djstaged_postgres, djstaged_s3_server, tmp_path):
    """The README's database user ``alice``, a fresh database and a fresh bucket on the test's own servers."""
    if not djstaged_connection.query("SELECT 1 FROM pg_roles WHERE rolname = 'alice'").fetchone():
        djstaged_connection.query("CREATE ROLE alice LOGIN SUPERUSER")
    database = f"docs_{uuid.uuid4().hex[:10]}"
    djstaged_connection.query(f'CREATE DATABASE "{database}"')
    server = djstaged_s3_server
    client = s3_client({"endpoint": server.endpoint, "access_key": server.access_key, "secret_key": server.secret_key})
    bucket = f"lab-raw-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    location = tmp_path / "store"
    location.mkdir()
    try:
        yield Lab(djstaged_postgres.host, database, location, server.endpoint, bucket, client)
    finally:
        djstaged_connection.query(f'DROP DATABASE "{database}" WITH (FORCE)')


def pointed_at(config: dict, lab: Lab) -> dict:
    """The README's configuration with each placeholder, checked to be the README's, replaced by a test server."""
    real = lab.real()
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


def readme_environment(lab: Lab) -> dict[str, str]:
    """What the README's environment block exports (bash runs it), its placeholders pointed at ``lab``."""
    secrets = {"LAB_DB_PASSWORD": "db-password", "LAB_S3_KEY": "testing", "LAB_S3_SECRET": "testing"}
    done = subprocess.run(
        ["bash", "-e", "-c", config_block("environment").code + "\nenv -0"],
        env={"PATH": os.environ["PATH"], **secrets},
        capture_output=True,
        check=True,
    )
    exported = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    exported = {k: v for k, v in exported.items() if k.startswith(("DJ_", "AWS_"))}
    database = {"host": exported["DJ_HOST"], "name": exported["DJ_DATABASE_NAME"]}
    settings = pointed_at({"database": database, "stores": json.loads(exported["DJ_STORES"])}, lab)
    exported |= {
        "DJ_HOST": settings["database"]["host"],
        "DJ_DATABASE_NAME": settings["database"]["name"],
        "DJ_STORES": json.dumps(settings["stores"]),
    }
    return exported


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
        frames : <npy@main>  # the local store
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
        "database": dj.conn().query("SELECT current_database()").fetchone()[0],
        "stores": dict(dj.config.stores),
        "frames": np.asarray(row["frames"]).tolist(),
        "raw": row["raw"].decode(),
    }))
finally:
    schema.drop(prompt=False)
'''


def run_child(cwd: Path, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "No datajoint.json found" not in done.stderr and "Failed to load config" not in done.stderr, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_readme_datajoint_json_and_secrets_connect(lab, tmp_path):
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)  # DataJoint looks for datajoint.json up to the repository root
    (project / "analysis").mkdir()
    config = pointed_at(json.loads(config_block("datajoint.json").code), lab)
    (project / "datajoint.json").write_text(json.dumps(config))
    subprocess.run(["bash", "-e", "-c", config_block("secrets").code], cwd=project, check=True)
    assert (project / ".secrets" / ".gitignore").read_text() == "*\n"
    found = run_child(project / "analysis", without_settings())  # from a subfolder, as in a project
    assert found["user"] == "alice" and found["database"] == lab.database  # from .secrets/ and datajoint.json
    raw = found["stores"]["raw"]
    assert (raw["access_key"], raw["secret_key"]) == ("AKIAEXAMPLEKEY", "example-secret")  # from .secrets/
    assert found["frames"] == [0, 1, 2, 3, 4] and found["raw"] == "raw bytes"
    keys, files = lab.objects()
    assert any("/_hash/" in k for k in keys) and any(f.startswith("_schema/") for f in files)


def test_readme_environment_variables_connect(lab, tmp_path):
    exported = readme_environment(lab)
    database = ["DJ_BACKEND", "DJ_HOST", "DJ_PORT", "DJ_DATABASE_NAME", "DJ_USER", "DJ_PASS"]
    aws = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert sorted(exported) == sorted(["DJ_IGNORE_CONFIG_FILE", *database, "DJ_STORES", *aws])
    workdir = tmp_path / "job"  # no datajoint.json anywhere up to the repository root
    (workdir / ".git").mkdir(parents=True)
    found = run_child(workdir, {**without_settings(), **exported})
    assert found["user"] == "alice" and "access_key" not in found["stores"]["raw"]  # the AWS chain
    assert found["database"] == lab.database  # DJ_DATABASE_NAME
    assert found["frames"] == [0, 1, 2, 3, 4] and found["raw"] == "raw bytes"
    keys, files = lab.objects()
    assert any("/_hash/" in k for k in keys) and any(f.startswith("_schema/") for f in files)


CLOUD_PLACEHOLDERS = {
    ("imaging", "bucket"): "lab-imaging",
    ("imaging", "project"): "lab-project-123",
    ("imaging", "token"): "/etc/datajoint/gcs-service-account.json",
    ("archive", "container"): "lab-archive",
    ("archive", "account_name"): "labarchive",
}

CLOUD_CHILD = '''
import json, uuid
import numpy as np
import datajoint as dj
import dj_staged

schema = dj.Schema(f"readme_{uuid.uuid4().hex[:10]}")
try:
    Scan = schema(type("Scan", (dj.Manual,), {"definition": """
        scan_id : int32
        ---
        frames : <npy@imaging>
        notes : <blob@archive>
        """}))
    with dj_staged.staged_insert1(Scan) as staged:
        staged.rec["scan_id"] = 1
        with staged.open("frames", ".npy") as f:
            np.save(f, np.arange(5))
        with staged.open("notes", ".bin") as f:
            f.write(b"archived bytes")
    row = (Scan & {"scan_id": 1}).fetch1()
    print(json.dumps({"frames": np.asarray(row["frames"].load()).tolist(), "notes": row["notes"].decode()}))
finally:
    schema.drop(prompt=False)
'''


def test_readme_gcs_and_azure_stores_connect(lab, djstaged_gcs_server, djstaged_azure_server, tmp_path):
    """The README's GCS and Azure stores, pointed at the emulators: a row staged into both fetches back."""
    from dj_staged.testing.services import create_azure_container, create_gcs_bucket

    stores = json.loads(config_block("cloud-stores.json").code)["stores"]
    for (name, key), placeholder in CLOUD_PLACEHOLDERS.items():
        assert stores[name][key] == placeholder, f"README example changed at {name}.{key}: update CLOUD_PLACEHOLDERS"
    bucket, container = f"lab-imaging-{uuid.uuid4().hex[:8]}", f"lab-archive-{uuid.uuid4().hex[:8]}"
    create_gcs_bucket(djstaged_gcs_server, bucket)
    create_azure_container(djstaged_azure_server, container)
    stores["imaging"] |= {"bucket": bucket, "project": djstaged_gcs_server.project, "token": djstaged_gcs_server.token}
    stores["archive"] |= {"container": container, "account_name": djstaged_azure_server.account_name}
    # the key, which the README keeps in .secrets/, and the emulator's endpoint, which is not Azure's public one
    stores["archive"] |= {"account_key": djstaged_azure_server.account_key}
    stores["archive"] |= {"connection_string": djstaged_azure_server.connection_string}
    env = without_settings() | {
        "DJ_IGNORE_CONFIG_FILE": "true",
        "DJ_BACKEND": "postgresql",
        "DJ_HOST": lab.host,
        "DJ_DATABASE_NAME": lab.database,
        "DJ_USER": "alice",
        "DJ_PASS": "",
        "DJ_STORES": json.dumps({"default": "imaging", **stores}),
    }
    done = subprocess.run([sys.executable, "-c", CLOUD_CHILD], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"frames": [0, 1, 2, 3, 4], "notes": "archived bytes"}


# ---------------------------------------------------------------- the documents, run as a reader runs them

DRIVER = r"""
import json
import subprocess
import sys

blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}  # what an interpreter starts with: nothing else
outputs = []
for block in blocks:
    print(f"--- {block['where']}", file=sys.stderr, flush=True)
    if block["language"] == "python":
        exec(compile(block["code"], block["where"], "exec"), namespace)
    else:
        done = subprocess.run(["bash", "-e", "-c", block["code"]], cwd=block["cwd"], capture_output=True, text=True)
        sys.stderr.write(done.stdout + done.stderr)
        if done.returncode:
            raise SystemExit(f"{block['where']}: exit status {done.returncode}")
        outputs.append(done.stdout)
json.dump(outputs, open(sys.argv[2], "w"))
"""


@dataclass
class Run:
    """What a document's run printed: each shell block's output, and the driver's process id."""

    outputs: list[str]
    pid: int


def run_document(blocks: list[Block], env: dict[str, str], tmp_path: Path) -> Run:
    """Run ``blocks`` in order in one fresh interpreter (Python blocks) and bash (shell blocks)."""
    script = tmp_path / "blocks.json"
    script.write_text(
        json.dumps([{"where": b.where, "language": b.language, "code": b.code, "cwd": str(ROOT)} for b in blocks])
    )
    results = tmp_path / "outputs.json"
    workdir = tmp_path / "session"  # the interpreter's folder (the shell's is the repository's root)
    (workdir / ".git").mkdir(parents=True)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(script), str(results)],
        cwd=workdir,
        env={**without_settings(), **env, "PATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-20000:]
    assert "No datajoint.json found" not in stderr, stderr[-5000:]  # configured as the README says, nothing else
    return Run(json.loads(results.read_text()), process.pid)


def normalized(text: str, host: str, pid: str) -> list[str]:
    """Lines of ``text`` with times, sizes, the host and the process id replaced, spaces collapsed."""
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", "<time>", text)
    text = re.sub(r"\d+(?:\.\d+)? (?:B|KiB|MiB|GiB)\b", "<size>", text)
    text = re.sub(rf"(?<![\w.-]){re.escape(host)}(?![\w.-])", "<host>", text)
    text = re.sub(rf"\b{pid}\b", "<pid>", text)
    return [" ".join(line.split()) for line in text.strip().splitlines()]


def test_readme_runs_as_pasted(lab, tmp_path):
    """The README's blocks in order: Python in one fresh interpreter, shell commands from the repository's root."""
    blocks = [b for b in blocks_of(README) if b.kind in ("run", *OUTPUT_KINDS)]
    run = run_document([b for b in blocks if b.kind == "run"], readme_environment(lab), tmp_path)
    shells = [b for b in blocks if b.kind == "run" and b.language == "bash"]
    assert len(run.outputs) == len(shells)
    printed = dict(zip((b.line for b in shells), run.outputs, strict=True))
    compared = 0
    for previous, block in zip(blocks, blocks[1:], strict=False):
        if block.kind in OUTPUT_KINDS:
            actual = normalized(printed[previous.line], socket.gethostname(), str(run.pid))
            example = normalized(block.code, EXAMPLE_HOST, EXAMPLE_PID)
            if block.kind == "output-head":
                actual = actual[: len(example)]
            assert actual == example, (
                f"{block.where}: the README shows\n{block.code}\nthe command printed\n" + "\n".join(actual)
            )
            compared += 1
    assert compared >= 2
    keys, files = lab.objects()
    assert any("/_hash/dj_staged_tutorial/" in k for k in keys) and any(f.startswith("_schema/") for f in files)


@pytest.mark.parametrize("doc", [d for d in all_docs() if d.name not in RUN_AS_TEST_MODULE], ids=lambda d: d.name)
def test_doc_runs_as_pasted(doc, lab, tmp_path):
    run_document(blocks_of(doc), readme_environment(lab), tmp_path)


@pytest.mark.parametrize("name", sorted(RUN_AS_TEST_MODULE))
def test_doc_blocks_run_as_a_test_module(name, tmp_path):
    module = tmp_path / "test_my_codecs.py"
    module.write_text("\n\n".join(b.code for b in blocks_of(DOCS / name)))
    run = run_pytest(module, tmp_path)
    assert run.returncode == 0 and set(run.outcomes.values()) == {"passed"}, run.failures or run.output
    suites = set(re.findall(r"^class (Test\w+)\(", module.read_text(), re.MULTILINE))
    assert {case.split("::")[0] for case in run.outcomes} == suites, "every suite in the doc ran"
