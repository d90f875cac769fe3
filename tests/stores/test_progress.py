"""Progress bars: shown on a terminal for long waits outside the caller's code, silent otherwise.

The waits are the re-read that hashes a staged object, the framing of content
behind a prefix, and a promotion by copy on S3 (one ``CopyObject``, or part by
part above 5 GiB). The thresholds are lowered so the tests stay small.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import textwrap

import pytest
from support.stores import s3_calls
from support.tables import declare

import dj_staged
from dj_staged import progress
from dj_staged.stores import s3 as promote

MIB = 1 << 20

REHASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path

    from datajoint.storage import StorageBackend

    from dj_staged import progress
    from dj_staged.addressing.hashing import rehash
    from dj_staged.stores.local import LocalStore

    progress.MIN_BYTES = 1 << 20
    Path(sys.argv[1], "object.bin").write_bytes(os.urandom(32 << 20))
    spec = {"protocol": "file", "location": sys.argv[1]}
    store = LocalStore("main", spec, StorageBackend(spec))
    with progress.progress_callback("hashing", 32 << 20) as callback:
        rehash(store, "object.bin", callback=callback)
    """
)


def _run_rehash(tmp_path, *, terminal: bool, env: dict[str, str]) -> str:
    """Run a 32 MiB re-read in a child whose stderr is a pseudo-terminal or a pipe; return its stderr."""
    environment = {**os.environ, **env}
    command = [sys.executable, "-c", REHASH_SCRIPT, str(tmp_path)]
    if not terminal:
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a fresh pty is 0 columns wide
    child = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    output = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        output += data
    os.close(leader)
    assert child.wait(timeout=120) == 0, output
    return output.decode(errors="replace")


def test_bar_on_a_terminal(tmp_path):
    assert "hashing" in _run_rehash(tmp_path, terminal=True, env={"DJ_STAGED_PROGRESS": "1"})


def test_silent_off_a_terminal(tmp_path):
    assert "hashing" not in _run_rehash(tmp_path, terminal=False, env={"DJ_STAGED_PROGRESS": "1"})


@pytest.mark.parametrize("value", ["0", "off", "false"])
def test_silent_when_turned_off(tmp_path, value):
    assert "hashing" not in _run_rehash(tmp_path, terminal=True, env={"DJ_STAGED_PROGRESS": value})


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch) -> Terminal:
    """stderr replaced by a terminal-like buffer, the bar threshold lowered to 1 MiB, progress on.

    Called in the test body: pytest's output capture resets ``sys.stderr`` between setup and call.
    """
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress, "MIN_BYTES", MIB)
    monkeypatch.delenv("DJ_STAGED_PROGRESS", raising=False)
    return stream


@pytest.fixture
def LocalArtifact(djstaged_schema, djstaged_local_store):
    return declare(djstaged_schema, "LocalArtifact", "artifact_id : int32\n---\npayload = null : <blob@main>")


@pytest.fixture
def S3Artifact(djstaged_schema, djstaged_s3_store):
    return declare(
        djstaged_schema,
        "S3Artifact",
        "artifact_id : int32\n---\npayload = null : <blob@s3>\ncontent = null : <hash@s3>",
    )


def _write(staged, field: str, data: bytes) -> None:
    with staged.open(field, ".bin") as f:
        for start in range(0, len(data), MIB):
            f.write(data[start : start + MIB])


@pytest.mark.parametrize(
    ("table", "size", "wait"),
    [("LocalArtifact", 3 * MIB, "hashing"), ("S3Artifact", 20 * MIB, "framing")],
    ids=["local-rehash", "s3-framing"],
)
def test_staged_blob_without_size_shows_its_wait(request, table, size, wait, monkeypatch):
    """Without ``size=``, a ``<blob@>`` is re-read to hash it (local) or framed behind its prefix (S3)."""
    Artifact = request.getfixturevalue(table)
    terminal = on_terminal(monkeypatch)
    data = os.urandom(size)
    with dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 1
        _write(staged, "payload", data)
    assert wait in terminal.getvalue()
    assert (Artifact & "artifact_id=1").fetch1("payload") == data


def test_staged_blob_with_size_has_nothing_to_wait_for(LocalArtifact, monkeypatch):
    terminal = on_terminal(monkeypatch)
    data = os.urandom(3 * MIB)
    with dj_staged.staged_insert1(LocalArtifact) as staged:
        staged.rec["artifact_id"] = 1
        with staged.open("payload", ".bin", size=len(data)) as f:
            f.write(data)
    assert terminal.getvalue() == ""


@pytest.mark.parametrize(
    ("part", "copies"),
    [
        (None, {"CopyObject": 1, "UploadPartCopy": 0}),
        (5 * MIB, {"UploadPartCopy": 3}),  # 12 MiB in parts of 5 MiB, each copied inside the server
    ],
    ids=["one-copy", "by-parts"],
)
def test_s3_promotion_shows_a_bar(S3Artifact, djstaged_s3_store, monkeypatch, part, copies):
    terminal = on_terminal(monkeypatch)
    if part is not None:
        monkeypatch.setattr(promote, "S3_COPY_PART", part)
        monkeypatch.setattr(promote, "S3_PART_COPY", MIB)  # as above 5 GiB, where CopyObject cannot copy
    data = os.urandom(12 * MIB)
    with s3_calls(djstaged_s3_store) as (calls, _downloaded), dj_staged.staged_insert1(S3Artifact) as staged:
        staged.rec["artifact_id"] = 1
        _write(staged, "content", data)
    assert "promoting" in terminal.getvalue()  # told the size, then that it is done
    assert {name: calls[name] for name in copies} == copies
    assert (S3Artifact & "artifact_id=1").fetch1("content") == data


def test_s3_promotion_silent_when_turned_off(S3Artifact, monkeypatch):
    terminal = on_terminal(monkeypatch)
    monkeypatch.setenv("DJ_STAGED_PROGRESS", "0")
    data = os.urandom(12 * MIB)
    with dj_staged.staged_insert1(S3Artifact) as staged:
        staged.rec["artifact_id"] = 1
        _write(staged, "content", data)
    assert terminal.getvalue() == ""
    assert (S3Artifact & "artifact_id=1").fetch1("content") == data


def test_importing_and_staging_never_imports_tqdm(tmp_path):
    """tqdm (and its notebook warning) comes in only when a bar is shown; small waits show none."""
    code = textwrap.dedent(
        """
        import sys, warnings
        import datajoint  # its own import-time deprecation warning is not ours
        warnings.simplefilter("error")
        import dj_staged, dj_staged.progress
        dj_staged.staged_insert1, dj_staged.staged_insert
        callback = dj_staged.progress.progress_callback("hashing", 1 << 20)
        callback.relative_update(1 << 20)
        print("tqdm" in sys.modules)
        """
    )
    env = {**os.environ, "DJ_IGNORE_CONFIG_FILE": "true"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
