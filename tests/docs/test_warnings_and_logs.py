"""Warnings point at the user's line; log lines come from the ``dj_staged`` loggers; the test S3 server is quiet."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import dj_staged
from dj_staged.errors import IgnoredValueWarning

SRC = Path(dj_staged.__file__).parent


def ignored_value_warning(caught) -> object:
    (warning,) = [w for w in caught if issubclass(w.category, IgnoredValueWarning)]
    return warning


def test_ignored_value_warning_points_at_the_with_line(Recording):
    with pytest.warns(IgnoredValueWarning, match=r"staged.rec\['raw'\] is ignored") as caught:
        with_line = sys._getframe().f_lineno + 1
        with dj_staged.staged_insert1(Recording) as staged:
            staged.rec["recording_id"] = 1
            staged.rec["raw"] = b"set by hand"
            with staged.open("raw", ".bin") as f:
                f.write(b"written")
            with staged.open("waveform", ".npy") as f:
                np.save(f, np.zeros(2))
    warning = ignored_value_warning(caught)
    assert (warning.filename, warning.lineno) == (__file__, with_line)


def test_ignored_value_warning_in_a_batch_points_at_the_row_block(Recording):
    with pytest.warns(IgnoredValueWarning) as caught:
        with dj_staged.staged_insert(Recording) as batch:
            row_line = sys._getframe().f_lineno + 1
            with batch.row() as staged:
                staged.rec["recording_id"] = 2
                staged.rec["waveform"] = "set by hand"
                with staged.open("waveform", ".npy") as f:
                    np.save(f, np.zeros(2))
                with staged.open("raw", ".bin") as f:
                    f.write(b"written")
    warning = ignored_value_warning(caught)
    assert (warning.filename, warning.lineno) == (__file__, row_line)


def test_every_module_logs_through_its_own_dj_staged_logger():
    modules = 0
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["logger"]:
                modules += 1
                call = node.value
                assert isinstance(call, ast.Call) and ast.unparse(call) == "logging.getLogger(__name__)", path
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("logging.warning", "logging.info"):
                pytest.fail(f"{path}: logs on the root logger")
    assert modules >= 10


QUIET_CHECK = textwrap.dedent(
    """
    import sys

    import boto3

    from dj_staged.testing.services import moto_s3_server

    for verbose in (False, True):
        print(f"--- verbose={verbose}", file=sys.stderr, flush=True)
        with moto_s3_server(verbose=verbose) as s3:
            client = boto3.client(
                "s3",
                endpoint_url=f"http://{s3.endpoint}",
                aws_access_key_id=s3.access_key,
                aws_secret_access_key=s3.secret_key,
                region_name="us-east-1",
            )
            client.create_bucket(Bucket="quiet")
            for i in range(5):
                client.put_object(Bucket="quiet", Key=f"k{i}", Body=b"x")
            assert len(client.list_objects_v2(Bucket="quiet")["Contents"]) == 5
        sys.stderr.flush()
    """
)


def test_moto_server_keeps_request_lines_out_of_stderr_unless_asked(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", QUIET_CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    quiet, verbose = done.stderr.split("--- verbose=False\n", 1)[1].split("--- verbose=True\n", 1)
    assert "PUT /quiet" not in quiet and "HTTP/1.1" not in quiet, quiet
    assert verbose.count("PUT /quiet/k") == 5  # asked for: one line per request, as werkzeug logs them
