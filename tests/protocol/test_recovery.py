"""The README's recovery recipe, after a real populate(reserve_jobs=True) interrupted by Ctrl-C or killed by SIGKILL.

A child process runs ``Analysis.populate(reserve_jobs=True)``; its ``make()`` stages a row, writes half of it, and
then the process receives SIGINT (Python's ``KeyboardInterrupt``, what Ctrl-C sends) or SIGKILL. Afterwards the
job is ``error`` or ``reserved`` and the next populate does nothing; ``dj-staged status`` names the job and prints
the call that releases it, ``dj-staged gc --delete`` removes what the write left, and the next populate makes the
row.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import datajoint as dj
import numpy as np
import pytest
from support.database import wait_for_session_end
from support.stores import store_files
from support.tables import declare

import dj_staged
from dj_staged.cli import main
from dj_staged.status import ABANDONED, INTERRUPTED, WRITER_GONE, in_flight

SOURCE = "source_id : int32"
ANALYSIS = """
-> Source
---
trace : <npy@main>
"""

WORKER = """
import json, os, signal, sys
import datajoint as dj
import numpy as np
import dj_staged
from dj_staged.testing.services import PostgresInfo, connect_datajoint

cfg = json.loads(sys.argv[1])
connection = connect_datajoint(PostgresInfo(cfg["host"], cfg["port"], cfg["user"], cfg["password"]), cfg["stores"])
print("session", connection.connection_id, flush=True)
schema = dj.Schema(cfg["schema"], connection=connection, create_tables=False)
Source = schema(type("Source", (dj.Manual,), {"definition": cfg["source"]}))


@schema
class Analysis(dj.Computed):
    definition = cfg["analysis"]

    def make(self, key):
        with dj_staged.staged_insert1(self) as staged:
            staged.rec.update(key)
            with staged.open("trace", ".npy") as f:
                f.write(b"\\x93NUMPY half of a file")
                f.flush()
                print("written", flush=True)
                os.kill(os.getpid(), getattr(signal, cfg["signal"]))
                print("unreachable", flush=True)


Analysis.populate(reserve_jobs=True)
"""


def make(self, key):
    """The parent's ``make()``: the whole row this time."""
    with dj_staged.staged_insert1(self) as staged:
        staged.rec.update(key)
        with staged.open("trace", ".npy") as f:
            np.save(f, np.arange(5.0) + key["source_id"], allow_pickle=False)


@pytest.fixture
def pipeline(djstaged_schema, djstaged_local_store):
    Source = declare(djstaged_schema, "Source", SOURCE)
    Source.insert1({"source_id": 3})
    Analysis = djstaged_schema(type("Analysis", (dj.Computed,), {"definition": ANALYSIS, "make": make}))
    return Source, Analysis


def run_worker(signal_name: str, djstaged_postgres, djstaged_schema, tmp_path) -> int:
    """Run the worker until the signal ends it; return its database session's id."""
    config = {
        "host": djstaged_postgres.host,
        "port": djstaged_postgres.port,
        "user": djstaged_postgres.user,
        "password": djstaged_postgres.password,
        "stores": dict(dj.config.stores),
        "schema": djstaged_schema.database,
        "source": SOURCE,
        "analysis": ANALYSIS,
        "signal": signal_name,
    }
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(config)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == -getattr(signal, signal_name), done.stderr
    assert done.stdout.strip().endswith("written"), done.stdout  # and not "unreachable"
    if signal_name == "SIGINT":
        assert "KeyboardInterrupt" in done.stderr
    return int(re.search(r"^session (\d+)$", done.stdout, re.MULTILINE).group(1))


@pytest.mark.parametrize(
    "signal_name, job_status, how", [("SIGINT", "error", INTERRUPTED), ("SIGKILL", "reserved", WRITER_GONE)]
)
def test_recovery_recipe_after_an_interrupted_populate(
    signal_name, job_status, how, pipeline, djstaged_postgres, djstaged_schema, djstaged_local_store, tmp_path, capsys
):
    Source, Analysis = pipeline
    session = run_worker(signal_name, djstaged_postgres, djstaged_schema, tmp_path)
    wait_for_session_end(djstaged_schema.connection, session)
    left = store_files(djstaged_local_store)
    assert len(left) == 1 and left[0].endswith(".npy")  # what the write left
    job = (Analysis.jobs & {"source_id": 3}).to_dicts()[0]
    assert job["status"] == job_status
    if signal_name == "SIGINT":
        assert job["error_message"] == "KeyboardInterrupt"

    # the lab engineer's finding: the next populate does nothing
    assert Analysis.populate(reserve_jobs=True)["success_count"] == 0

    # 1. dj-staged status shows the abandoned write and the job, with the call that releases it
    status = in_flight(djstaged_schema.connection, schemas=[djstaged_schema.database])
    (write,) = status.writes
    assert (write.state, write.how, write.class_name, write.key) == (ABANDONED, how, "Analysis", {"source_id": 3})
    (waiting,) = status.jobs
    assert (waiting.status, waiting.key, waiting.class_name) == (job_status, {"source_id": 3}, "Analysis")
    which = {"error": "errors", "reserved": "reserved"}[job_status]
    call = f"(Analysis.jobs.{which} & [{{'source_id': 3}}]).delete()"
    assert status.release_calls() == [call]
    assert main(["status", "--schema", djstaged_schema.database]) == 0
    text = capsys.readouterr().out
    assert "1 populate job waits to be released (below)." in text.splitlines()[0]
    assert f"abandoned ({how})" in text and "Analysis (__analysis)" in text
    assert f"  {call}" in text.splitlines()
    assert main(["status", "--schema", djstaged_schema.database, "--json"]) == 0
    (as_json,) = json.loads(capsys.readouterr().out)["jobs"]
    assert as_json["release"] == call and as_json["table"] == "__analysis"

    # 2. release the job with the printed call, exactly as printed
    exec(call, {"Analysis": Analysis})
    assert len(Analysis.jobs & {"source_id": 3}) == 0

    # 3. dj-staged gc --delete removes what the write left, without waiting for the grace period
    assert main(["gc", "--schema", djstaged_schema.database, "--delete"]) == 0
    assert "Deleted 2 objects" in capsys.readouterr().out  # the .npy file and the lease
    assert store_files(djstaged_local_store, leases=True) == []
    assert in_flight(djstaged_schema.connection, schemas=[djstaged_schema.database]).jobs == []

    # 4. the next populate makes the row
    assert Analysis.populate(reserve_jobs=True)["success_count"] == 1
    np.testing.assert_array_equal((Analysis & {"source_id": 3}).fetch1("trace").load(), np.arange(5.0) + 3)


def test_a_reserved_job_whose_worker_is_alive_is_not_offered_for_release(pipeline, djstaged_schema):
    """A ``reserved`` job whose database session still lives is its worker's, whatever a lease says."""
    Source, Analysis = pipeline
    Analysis.jobs.refresh()
    assert Analysis.jobs.reserve({"source_id": 3})  # reserved by this process's session, which lives on
    with pytest.raises(KeyboardInterrupt), dj_staged.staged_insert1(Analysis, allow_direct_insert=True) as staged:
        staged.rec["source_id"] = 3
        with staged.open("trace", ".npy") as f:
            f.write(b"\x93NUMPY")
        raise KeyboardInterrupt
    status = in_flight(djstaged_schema.connection, schemas=[djstaged_schema.database])
    assert [w.how for w in status.writes] == [INTERRUPTED] and status.jobs == []
    # DataJoint records the session of the reservation, which a worker that reconnected no longer has
    stale = djstaged_schema.connection.query("SELECT max(pid) + 1000 FROM pg_stat_activity").fetchone()[0]
    Analysis.jobs.update1({"source_id": 3, "connection_id": stale})
    assert (
        in_flight(djstaged_schema.connection, schemas=[djstaged_schema.database]).jobs == []
    )  # its process still runs here
    Analysis.jobs.error({"source_id": 3}, error_message="KeyboardInterrupt")  # what populate records then
    assert [j.status for j in in_flight(djstaged_schema.connection, schemas=[djstaged_schema.database]).jobs] == [
        "error"
    ]
