"""A short run of the randomized soak (tests/soak.py): writers, deleters and collectors in separate processes.

Every committed row must fetch its exact content, and after a final collection nothing unreferenced may be
left in either store. ``make soak`` runs the long version.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import soak


def test_short_soak_loses_no_row_and_leaves_nothing(
    dj_postgres, dj_s3_server, dj_gcs_server, dj_azure_server, tmp_path
):
    stores = ("local", "s3", "gcs", "azure")
    config = soak.SoakConfig(ops=150, stores=stores, writers=3, deleters=1, collectors=1, seed=11, timeout=240)
    services = soak.Services(
        db=dataclasses.asdict(dj_postgres),
        stores=soak.store_specs(config.stores, tmp_path, dj_s3_server, dj_gcs_server, dj_azure_server),
        workdir=str(tmp_path),
    )
    result = soak.run_soak(config, services)
    print(result.summary(config))
    assert result.lost == []
    assert result.leftovers == []
    assert result.errors == []
    stats = result.stats
    assert stats["ops"] == config.ops
    assert result.rows_verified > 0 and stats["rows_committed"] > 0 and stats["deletes"] > 0
    kills = stats["step_kills"] + stats["write_kills"] + stats["multipart_kills"] + stats["after_commit_kills"]
    assert kills > 0 and stats["restarts"] > 0
    assert stats["pauses"] > 0 and stats["pause_collections"] > 0
    assert stats["dedups"] > 0
    assert stats["collections"] > 0 and stats["collected"] > 0
    assert stats["exceptions"] > 0 and stats["interrupts"] > 0
    assert stats["commit_cuts"] > 0


def test_the_checks_see_a_lost_object_and_a_leftover(dj_schema, dj_stores, tmp_path):
    """The soak's own checks are not vacuous: a removed object is a lost row, a stray file a leftover."""
    import datajoint as dj

    stores = soak.store_specs(("local",), tmp_path)
    dj.config.stores = stores
    tables = soak.declare_tables(dj_schema, ["local"])
    row = soak.RowPlan(3, [soak.FieldPlan(f"{codec}_local", True, 1) for codec in soak.CODECS])
    plan = soak.OpPlan("Alpha", batch=False, rows=[row])
    shared = soak.Shared(1, 1)
    soak.run_op(tables, plan, soak.Op(plan, shared, 0), shared, 0, big_every=0)
    assert soak.verify_rows(dj_schema, tables, ["local"], 0, tmp_path / "downloads") == (1, [])
    assert soak.leftovers(dj_schema, stores) == []

    root = Path(stores["local"]["location"])
    (npy,) = dj_schema.connection.query(f"SELECT npy_local FROM {tables['Alpha'].full_table_name}").fetchone()
    (root / npy["path"]).unlink()
    stray = root / "_staging" / dj_schema.database / "alpha" / "stray.bin"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"x")
    verified, lost = soak.verify_rows(dj_schema, tables, ["local"], 0, tmp_path / "downloads")
    assert verified == 0 and len(lost) == 1 and lost[0].startswith("Alpha k=3: npy_local")
    left = f"local: _staging/{dj_schema.database}/alpha/stray.bin (staging or lease left)"
    assert soak.leftovers(dj_schema, stores) == [left]
