"""A short run of the randomized soak (tests/soak/): writers, deleters and collectors in separate processes.

Every committed row must fetch its exact content, and after a final collection nothing unreferenced may be
left in either store. ``make soak`` runs the long version.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from soak.checker import leftovers, verify_rows
from soak.config import CODECS, RESUMABLE_CODECS, Services, SoakConfig
from soak.content import declare_tables, expected, placed_path
from soak.orchestrator import run_soak
from soak.resumes import ResumableOp, ResumePlan, run_resumable
from soak.services import store_specs
from soak.shared import Shared
from soak.writers import FieldPlan, Op, OpPlan, RowPlan, run_op


def test_short_soak_loses_no_row_and_leaves_nothing(
    djstaged_postgres, djstaged_s3_server, djstaged_gcs_server, djstaged_azure_server, tmp_path
):
    stores = ("local", "s3", "gcs", "azure")
    config = SoakConfig(
        ops=150, stores=stores, writers=3, deleters=1, collectors=1, seed=11, timeout=240, resume_share=0.15
    )
    services = Services(
        db=dataclasses.asdict(djstaged_postgres),
        stores=store_specs(config.stores, tmp_path, djstaged_s3_server, djstaged_gcs_server, djstaged_azure_server),
        workdir=str(tmp_path),
    )
    result = run_soak(config, services)
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
    assert stats["dedups"] > 0 and stats["placed"] > 0
    assert stats["collections"] > 0 and stats["collected"] > 0
    assert stats["exceptions"] > 0 and stats["interrupts"] > 0
    assert stats["commit_cuts"] > 0
    # resumable blocks cut off, then taken over: at least one went on from a non-zero durable prefix and committed
    # (every committed row, resumed ones included, was verified above)
    assert stats["resume_kills"] > 0 and stats["resume_takeovers"] > 0
    assert stats["resumed_committed"] > 0


def test_the_checks_see_a_lost_object_and_a_leftover(djstaged_schema, djstaged_stores, tmp_path):
    """The soak's own checks are not vacuous: a removed object is a lost row, a stray file a leftover."""
    import datajoint as dj

    stores = store_specs(("local",), tmp_path)
    dj.config.stores = stores
    tables = declare_tables(djstaged_schema, ["local"])
    row = RowPlan(3, [FieldPlan(f"{codec}_local", True, 1) for codec in CODECS])
    plan = OpPlan("Alpha", batch=False, rows=[row])
    shared = Shared(1, 1)
    run_op(tables, plan, Op(plan, shared, 0, tables["Alpha"]), shared, 0, big_every=0)
    assert verify_rows(djstaged_schema, tables, ["local"], 0, tmp_path / "downloads") == (1, [])
    assert leftovers(djstaged_schema, stores) == []

    root = Path(stores["local"]["location"])
    (npy,) = djstaged_schema.connection.query(f"SELECT npy_local FROM {tables['Alpha'].full_table_name}").fetchone()
    (root / npy["path"]).unlink()
    stray = root / "_staging" / djstaged_schema.database / "alpha" / "stray.bin"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"x")
    verified, lost = verify_rows(djstaged_schema, tables, ["local"], 0, tmp_path / "downloads")
    assert verified == 0 and len(lost) == 1 and lost[0].startswith("Alpha k=3: npy_local")
    left = f"local: _staging/{djstaged_schema.database}/alpha/stray.bin (staging or lease left)"
    assert leftovers(djstaged_schema, stores) == [left]
    stray.unlink()

    # a value placed for a row that was then deleted stays (DataJoint leaves it) if it holds what its key says
    placed = placed_path(djstaged_schema.database, "Alpha", "fp_local", 4)
    (root / placed).parent.mkdir(parents=True, exist_ok=True)
    (root / placed).write_bytes(expected("fp_local", 4, 0)[1])
    left = f"local: {placed} (placed, and no row references it)"
    assert leftovers(djstaged_schema, stores) == [left]
    assert leftovers(djstaged_schema, stores, deleted=["Alpha/4"]) == []
    (root / placed).write_bytes(b"mixed")
    assert leftovers(djstaged_schema, stores, deleted=["Alpha/4"]) == [left]


def test_the_checks_see_a_resumed_fields_wrong_metadata(djstaged_schema, djstaged_stores, tmp_path):
    """Resumable fields, written by the soak's resumable blocks without a fault, pass the checks; a size in the
    database that is not the stored object's is seen."""
    import json

    import datajoint as dj

    stores = store_specs(("local",), tmp_path)
    dj.config.stores = stores
    tables = declare_tables(djstaged_schema, ["local"])
    shared = Shared(1, 1, len(RESUMABLE_CODECS))
    for index, codec in enumerate(RESUMABLE_CODECS):
        plan = ResumePlan("Alpha", 5 + index, f"{codec}_local", code=index + 1, index=index)
        run_resumable(tables, plan, ResumableOp(plan, shared, 0, tables["Alpha"], random.Random(0), 300), shared, 0)
    assert verify_rows(djstaged_schema, tables, ["local"], 0, tmp_path / "downloads") == (4, [])
    assert leftovers(djstaged_schema, stores) == []

    table = tables["Alpha"].full_table_name
    for name, key in (("robj_local", 5), ("rblob_local", 7)):
        query = f"SELECT {name} FROM {table} WHERE k = %s"
        (value,) = djstaged_schema.connection.query(query, args=(key,)).fetchone()
        value["size"] += 1
        djstaged_schema.connection.query(f"UPDATE {table} SET {name} = %s WHERE k = %s", args=(json.dumps(value), key))
    verified, lost = verify_rows(djstaged_schema, tables, ["local"], 0, tmp_path / "downloads")
    assert verified == 2 and len(lost) == 2 and all("metadata differs: {'size'" in entry for entry in lost), lost
