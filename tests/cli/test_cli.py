"""``dj-staged`` for operators: ``gc --all-schemas``, a report that says what and why, few listings, quiet startup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import datajoint as dj
import numpy as np
import pytest
from datajoint.hash_registry import get_store_backend
from support.stores import put_file, s3_calls, s3_listings, store_files
from support.tables import declare, stage_recording

import dj_staged
from dj_staged._datajoint import full_path
from dj_staged.cli import main
from dj_staged.gc import LEASED, REFERENCED, YOUNG
from dj_staged.gc.policy import NOT_COLLECTED, OUTSIDE, UNREFERENCED

SCRIPT = Path(sys.executable).with_name("dj-staged")
MIB = 1 << 20
DAY = 86400.0


@pytest.fixture
def other_schema(djstaged_connection):
    schema = dj.Schema(f"t_{uuid.uuid4().hex[:10]}", connection=djstaged_connection)
    try:
        yield schema
    finally:
        schema.drop(prompt=False)


def sections_of(report: dict, schema: str) -> dict[str, dict]:
    return {s["section"]: s for s in report["sections"] if s["schema"] == schema}


def test_gc_all_schemas_says_what_it_would_delete_and_why_it_keeps_the_rest(
    Recording, other_schema, djstaged_local_store, capsys
):
    db, db2 = Recording.database, other_schema.database
    Other = declare(other_schema, "Other", "other_id : int32\n---\nraw : <object@main>")
    stage_recording(Recording, {"recording_id": 1})  # two objects a row references
    zarr = f"_schema/{db}/recording/recording_id=50/raw_zzzzzzzz.zarr"  # an orphaned directory value
    put_file(djstaged_local_store, f"{zarr}/zarr.json", b"{}", age=3 * DAY)
    put_file(djstaged_local_store, f"{zarr}/c/0", b"x" * (3 * MIB // 2), age=3 * DAY)
    put_file(djstaged_local_store, f"{zarr}/c/1", b"y" * 100, age=3 * DAY)
    young = f"_schema/{db2}/other/other_id=1/raw_yyyyyyyy.bin"
    put_file(djstaged_local_store, young, b"young")  # unreferenced, but younger than the grace period
    put_file(djstaged_local_store, "raw_data/session1.tif", b"acquired")  # not ours: outside every section
    ghost = f"ghost_{uuid.uuid4().hex[:6]}"
    put_file(djstaged_local_store, f"_schema/{ghost}/t/x.bin", b"a schema this connection cannot list")
    with dj_staged.staged_insert1(Recording) as staged:  # a write in flight
        staged.rec["recording_id"] = 3
        with staged.open("raw", ".bin") as f:
            f.write(b"in flight")
        in_flight = staged.field("raw").state.path
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.zeros(3))
        in_flight_too = staged.field("waveform").state.path
        assert main(["gc", "--all-schemas", "--store", "main"]) == 0
        text = capsys.readouterr().out
        assert main(["gc", "--all-schemas", "--store", "main", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
    lines = text.splitlines()
    # the summary line comes first; sizes are for people in the table, exact in JSON
    assert lines[0].startswith("Dry run: would delete 1 object (3 files, 1.5 MiB) in 1 store; kept ")
    assert "2 referenced by a row" in lines[0] and "younger than the grace period (24h)" in lines[0]
    # what was not looked into is told apart from what was kept, in words that name it
    kept_part, left_part = lines[0].split("; left alone, not looked into: ")
    assert kept_part.endswith(
        "kept 6 objects: 2 referenced by a row, 3 in flight (live lease), 1 younger than the grace period (24h)"
    )
    assert left_part == (
        f"1 folder of 1 schema not collected in this run ({ghost}) and 1 name at the store's top that is not "
        "DataJoint's or dj-staged's (raw_data/)."
    )
    assert report["summary"] == lines[0]
    schema = sections_of(report, db)["schema"]
    assert schema["collectable"] == [
        {"object": zarr, "files": 3, "bytes": 2 + 3 * MIB // 2 + 100, "oldest": schema["oldest"], "why": UNREFERENCED}
    ]
    assert (schema["objects"], schema["files"], schema["bytes"]) == (1, 3, 2 + 3 * MIB // 2 + 100)
    assert schema["referenced"]["objects"] == 2
    assert {p["object"]: p["reason"] for p in schema["protected"]} == {in_flight: LEASED, in_flight_too: LEASED}
    assert {p["object"]: p["reason"] for p in sections_of(report, db2)["schema"]["protected"]} == {young: YOUNG}
    outside = {p["object"]: p["reason"] for p in sections_of(report, "-")["outside"]["protected"]}
    assert outside["raw_data/"] == OUTSIDE and sum(r == NOT_COLLECTED for r in outside.values()) == 1
    assert report["kept"][REFERENCED] == 2
    # the table: one line per section with something in it, reasons counted per column, sizes readable
    header = lines[2].split()
    assert header[:7] == ["store", "schema", "section", "delete", "files", "size", "oldest"]
    assert header[7:] == ["referenced", "in", "flight", "young", "outside"]
    row = next(line.split() for line in lines if line.split()[1:3] == [db, "schema"])
    assert row[3:7] == ["1", "3", "1.5", "MiB"] and row[-4:] == ["2", "2", "0", "0"]
    assert next(line.split() for line in lines if line.split()[1:3] == [db2, "schema"])[-4:] == ["0", "0", "1", "0"]
    assert next(line.split() for line in lines if line.split()[1:3] == ["-", "outside"])[-1] == "2"
    kept = lines[lines.index(next(line for line in lines if line.startswith("kept"))) :]
    assert any(in_flight in line and line.endswith("in flight (live lease)") for line in kept)
    assert any(young in line and line.endswith("younger than the grace period (24h)") for line in kept)
    assert any("raw_data/" in line and line.endswith(OUTSIDE) for line in kept)
    assert any(zarr in line and "3 files" in line and "1.5 MiB" in line and UNREFERENCED in line for line in lines)
    # delete: only the orphaned directory value goes
    assert main(["gc", "--all-schemas", "--store", "main", "--delete", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["deleted_files"] == 3 and done["freed_bytes"] == 2 + 3 * MIB // 2 + 100
    files = store_files(djstaged_local_store)
    assert not any(f.startswith(zarr) for f in files) and young in files and "raw_data/session1.tif" in files
    assert len(Other()) == 0


def test_gc_needs_schemas_named_or_all(djstaged_connection, djstaged_local_store, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["gc"])
    assert exited.value.code == 2 and "--schema" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["gc", "--schema", "a", "--all-schemas"])
    assert "not allowed with" in capsys.readouterr().err
    assert main(["gc", "--all-schemas", "--store", "main"]) == 0  # an empty store: nothing to collect, and it says so
    out = capsys.readouterr().out
    assert out.startswith("Dry run: nothing to delete in 1 store.")
    assert "note: store main: no schema this connection can list has objects here" in out


def test_gc_on_s3_lists_each_prefix_at_most_twice_and_deletes_in_batches(
    djstaged_schema, djstaged_s3_store, tmp_path, capsys
):
    Sample = declare(djstaged_schema, "Sample", "sample_id : int32\n---\ndata : <blob@s3>\nraw : <object@s3>")
    db = djstaged_schema.database
    for i in range(5):
        (tmp_path / f"{i}.bin").write_bytes(bytes([i]) * 16)
        Sample.insert1({"sample_id": i, "data": np.full(10, i), "raw": str(tmp_path / f"{i}.bin")})
    backend = get_store_backend("s3")
    orphans = {f"_schema/{db}/sample/sample_id={100 + i}/raw_aaaaaaa{i % 10}.bin": b"o" * 10 for i in range(40)}
    orphans |= {f"_schema/{db}/sample/sample_id=200/raw_bbbbbbbb.zarr/c/{i}": b"z" * 10 for i in range(5)}
    orphans[f"_staging/{db}/sample/data_cccccccc.bin"] = b"s" * 10
    backend.fs.pipe({full_path(backend, path): data for path, data in orphans.items()})
    with dj_staged.staged_insert1(Sample) as staged:  # a write in flight, its lease listed twice
        staged.rec["sample_id"] = 9
        staged.rec["data"] = np.zeros(3)
        with staged.open("raw", ".bin") as f:
            f.write(b"in flight")
        with s3_listings(djstaged_s3_store) as listings, s3_calls(djstaged_s3_store) as (calls, _):
            assert main(["gc", "--all-schemas", "--store", "s3", "--grace", "0", "--delete", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["deleted_files"] == len(orphans) and report["errors"] == []
    assert report["objects"] == 40 + 1 + 1  # the five files of the directory value are one object
    location = djstaged_s3_store.spec["location"]
    assert all(n <= 2 for n in listings.values()), listings
    assert listings[("ListObjectsV2", f"{location}/_staging/_leases/{db}/")] == 2  # before the gate and inside it
    assert listings[("ListObjectsV2", f"{location}/_schema/{db}/")] == 1
    assert calls["DeleteObjects"] == 2 and calls["DeleteObject"] == 0  # one request per section, not one per file
    assert len(Sample()) == 6


def test_verbose_shows_dj_staged_log_lines(Recording, djstaged_local_store, capsys):
    argv = ["gc", "--schema", Recording.database, "--store", "main"]
    assert main(argv) == 0
    assert "dj_staged" not in capsys.readouterr().err  # WARNING by default: nothing to say
    assert main(["-v", *argv]) == 0
    err = capsys.readouterr().err
    assert f"INFO dj_staged.gc.collector: Looked at {Recording.database} in store main" in err
    assert main([*argv, "--log-level", "debug"]) == 0  # after the command name too
    assert "INFO dj_staged.gc.collector" in capsys.readouterr().err


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without DataJoint settings (``DJ_*``), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJ_")}
    return {**env, **extra}


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_help_prints_no_datajoint_warning(tmp_path):
    done = run(["--help"], tmp_path, clean_environment())
    assert done.returncode == 0 and "status" in done.stdout and "gc" in done.stdout
    assert done.stderr == ""  # DataJoint is not even imported


def test_missing_config_warning_only_when_no_settings_are_given(djstaged_postgres, djstaged_local_store, tmp_path):
    config = {
        "database": {
            "backend": "postgresql",
            "host": djstaged_postgres.host,
            "port": djstaged_postgres.port,
            "user": "postgres",
        },
        "stores": {"default": "main", "main": djstaged_local_store.spec},
    }
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "lab.json").write_text(json.dumps(config))
    (elsewhere / ".secrets").mkdir()
    (elsewhere / ".secrets" / "database.password").write_text("unused: the socket trusts")
    workdir = tmp_path / "work"  # no datajoint.json here or above
    workdir.mkdir()
    with_file = run(["status", "--config", str(elsewhere / "lab.json")], workdir, clean_environment())
    assert with_file.returncode == 0, with_file.stderr
    assert with_file.stdout.startswith("No staged writes in flight in 1 store (main).")
    with_env = run(
        ["status", "--json"],
        workdir,
        clean_environment(
            DJ_BACKEND="postgresql",
            DJ_HOST=djstaged_postgres.host,
            DJ_USER="postgres",
            DJ_PASS="unused",
            DJ_STORES=json.dumps(config["stores"]),
        ),
    )
    assert with_env.returncode == 0, with_env.stderr
    assert json.loads(with_env.stdout)["stores"] == ["main"]
    without = run(["status"], workdir, clean_environment())
    for done in (with_file, with_env):
        assert "No datajoint.json found" not in done.stderr, done.stderr
    assert "No datajoint.json found" in without.stderr  # nothing says where to connect: DataJoint's warning stays
    assert without.returncode == 2 and "dj-staged status: " in without.stderr
