"""Shared helpers: tables declared in a fresh schema per test, and store inspection."""

from __future__ import annotations

from pathlib import Path

import datajoint as dj
import pytest


def declare(schema, name: str, definition: str, tier=dj.Manual):
    """Declare a table class ``name`` with ``definition`` in ``schema``."""
    cls = type(name, (tier,), {"definition": definition})
    return schema(cls)


def store_files(store) -> list[str]:
    """Every file under a local store, relative to its location, sorted."""
    root = Path(store.spec["location"])
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def Recording(dj_schema, dj_local_store):
    return declare(
        dj_schema,
        "Recording",
        """
        recording_id : int32
        ---
        waveform : <npy@main>
        raw : <object@main>
        note = "" : varchar(64)
        """,
    )
