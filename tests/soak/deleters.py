"""The deleters: each deletes random committed rows, checking every field of a row before it goes."""

from __future__ import annotations

import logging
import random
import traceback
from pathlib import Path
from typing import Any

from soak.checker import check_row, select_rows
from soak.config import TABLES, Services, SoakConfig
from soak.content import field_names
from soak.shared import app_name, idle, open_schema, record


def deleter_main(slot: int, config: SoakConfig, services: Services, schema_name: str, shared: Any) -> None:
    """A deleter process: deletes random committed rows, about ``delete_share`` per writer operation.

    Before it deletes a row it fetches and checks every field, so rows that do not live to the end of the
    soak are verified too.
    """
    import shutil

    import datajoint as dj

    try:
        schema, tables = open_schema(services, schema_name, app_name(schema_name))
        dj.config["safemode"] = False
        logging.getLogger("datajoint").setLevel(logging.WARNING)  # no line per deleted row
        names = field_names(services.store_names)
        downloads = Path(services.workdir) / f"downloads-deleter{slot}"
        rng = random.Random(f"{config.seed}:deleter:{slot}")
        per_deleter = config.delete_share / max(1, config.deleters)
        deleted = 0
        while not shared.stop.value:
            if deleted >= per_deleter * sum(shared.done):
                idle()
                continue
            deleted += 1
            table_name = rng.choice(TABLES)
            table = tables[table_name]
            keys = list(table.fetch("k"))
            if not keys:
                continue
            key = int(rng.choice(keys))
            for row in select_rows(schema.connection, table, names, key):
                problems = check_row(table_name, table, row, names, config.big_every, downloads)
                shutil.rmtree(downloads, ignore_errors=True)
                if not problems:
                    shared.add(slot, "verified_before_delete")
                elif len(table & {"k": key}):  # still there (another deleter may have removed it meanwhile)
                    record(services, "lost", f"{table_name} k={key} (checked before its deletion): {problems}")
            count = (table & {"k": key}).delete()
            if count:
                record(services, "deleted", f"{table_name}/{key}")  # its placed values stay where they are
            shared.add(slot, "deletes", count)
    except BaseException:
        record(services, "errors", f"deleter{slot}: {traceback.format_exc()}")
        raise
