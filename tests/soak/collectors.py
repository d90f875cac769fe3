"""The collectors: ``collect(grace=0)`` of every store in a loop, paced by the writers' progress."""

from __future__ import annotations

import random
import traceback
from typing import Any

from soak.config import Services, SoakConfig
from soak.shared import app_name, idle, open_schema, record

COLLECT_PACE = 3  # a collector starts its next round once the writers have begun this many more operations


def collector_main(slot: int, config: SoakConfig, services: Services, schema_name: str, shared: Any) -> None:
    """A collector process: ``collect(grace=0, dry_run=False)`` of each store in a loop (now and then default grace).

    An interrupted resumable write is kept for the soak's resume window, except by a ``reclaim_share`` of the
    collections, whose window is 0: a takeover after one of those finds nothing to resume.
    """
    import dj_staged.gc

    try:
        schema, _tables = open_schema(services, schema_name, app_name(schema_name))
        rng = random.Random(f"{config.seed}:collector:{slot}")
        last = -COLLECT_PACE
        while not shared.stop.value:
            if sum(shared.done) < last + COLLECT_PACE:
                idle()
                continue
            last = sum(shared.done)
            for store in services.store_names:
                default = rng.random() < 0.15
                grace = dj_staged.gc.DEFAULT_GRACE if default else 0
                reclaiming = not default and rng.random() < config.reclaim_share
                window = 0 if reclaiming else None if default else config.resume_window
                shared.add(slot, "reclaims_begun", int(reclaiming))  # a writer expecting its prefix kept checks these
                try:
                    report = dj_staged.gc.collect(schema, store=store, grace=grace, resume_window=window, dry_run=False)
                except Exception:
                    shared.add(slot, "unexpected")
                    record(services, "errors", f"collector{slot}: {traceback.format_exc()}")
                    continue
                finally:
                    shared.add(slot, "collections_reclaiming", int(reclaiming))
                shared.add(slot, "collections")
                shared.add(slot, "collections_default_grace", int(default))
                shared.add(slot, "collected", report.deleted)
                if report.errors:
                    shared.add(slot, "unexpected")
                    record(services, "errors", f"collector{slot}: collection errors on {store}: {report.errors}")
    except BaseException:
        record(services, "errors", f"collector{slot}: {traceback.format_exc()}")
        raise
