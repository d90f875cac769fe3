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


def paused_writer(db: dict, stores: dict, schema_name: str, parts: int) -> list[str]:
    """Stage ``parts`` files through a ``store()`` handle, stopping the process (SIGSTOP) halfway."""
    import datajoint as dj
    from support.child import pause_here

    import dj_staged

    schema = dj.Schema(schema_name, connection=connect(db, stores), create_tables=False)
    Table = schema(type("Paused", (dj.Manual,), {"definition": "k : int32\n---\nraw : <object@main>"}))
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        fsmap = staged.store("raw", ".parts")
        for i in range(parts):
            if i == parts // 2:
                pause_here("midway")
            fsmap[f"part{i:03d}"] = part(i)
    return sorted(fsmap)


def part(i: int) -> bytes:
    """The bytes of part ``i`` of a paused writer's directory."""
    return f"part {i} ".encode() * 100


def dedup_writer(db: dict, stores: dict, schema_name: str, data: bytes) -> str:
    """Stage ``data`` into a ``<hash@>`` field, stopping the process at the protocol's ``writer.dedup`` step."""
    import datajoint as dj
    from support.child import pause_here

    import dj_staged
    from dj_staged import steps

    schema = dj.Schema(schema_name, connection=connect(db, stores), create_tables=False)
    Table = schema(type("Content", (dj.Manual,), {"definition": "k : int32\n---\nv : <hash@main>"}))
    with steps.observe("writer.dedup", lambda **context: pause_here("dedup")):
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["k"] = 2
            with staged.open("v", ".bin") as f:
                f.write(data)
    return "ok"
