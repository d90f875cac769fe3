"""Functions run in separate processes by the concurrency tests (spawned, so importable by name)."""

from __future__ import annotations

from typing import Any


def connect(db: dict, stores: dict) -> Any:
    from dj_staged.testing.services import PostgresInfo, connect_datajoint

    return connect_datajoint(PostgresInfo(**db), stores)


def table(schema_name: str, connection: Any) -> Any:
    import datajoint as dj

    schema = dj.Schema(schema_name, connection=connection)

    @schema
    class Shared(dj.Manual):
        definition = """
        k : int32
        ---
        v : <blob@main>
        """

    return Shared


def stage(db: dict, stores: dict, schema_name: str, key: int, data: bytes, barrier: Any) -> str:
    """Stage ``data`` under ``key`` once every worker is ready; report 'ok' or the error's class."""
    import dj_staged

    Shared = table(schema_name, connect(db, stores))
    try:
        with dj_staged.staged_insert1(Shared) as staged:
            staged.rec["k"] = key
            with staged.open("v", ".bin") as f:
                half = len(data) // 2
                f.write(data[:half])
                barrier.wait(timeout=60)
                f.write(data[half:])
    except Exception as error:
        return type(error).__name__
    return "ok"


def insert(db: dict, stores: dict, schema_name: str, key: int, data: bytes, barrier: Any) -> str:
    """Ordinary insert1 of ``data`` under ``key`` once every worker is ready."""
    Shared = table(schema_name, connect(db, stores))
    barrier.wait(timeout=60)
    Shared.insert1({"k": key, "v": data})
    return "ok"
