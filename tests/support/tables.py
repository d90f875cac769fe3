"""Tables declared in a test's fresh schema, and a staged insert that does one thing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datajoint as dj


def declare(schema: Any, name: str, definition: str, tier: type = dj.Manual) -> Any:
    """Declare a table class ``name`` with ``definition`` in ``schema``."""
    cls = type(name, (tier,), {"definition": definition})
    return schema(cls)


def attempt(table: Any, rec: dict, call: Callable[[Any], Any]) -> None:
    """A staged insert of ``table`` that sets ``rec`` and then does ``call(staged)``."""
    import dj_staged

    with dj_staged.staged_insert1(table) as staged:
        staged.rec.update(rec)
        call(staged)


def stage_recording(table: Any, key: dict, raw: bytes = b"raw bytes", waveform: Any = None) -> tuple[str, str]:
    """One staged row of the root ``conftest.py``'s ``Recording`` (``waveform`` defaults to ``np.arange(4.0)``);
    returns the paths of its two objects."""
    import numpy as np

    import dj_staged

    with dj_staged.staged_insert1(table) as staged:
        staged.rec.update(key)
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.arange(4.0) if waveform is None else waveform)
        with staged.open("raw", ".bin") as f:
            f.write(raw)
    row = (table & key).fetch1()
    return row["waveform"].path, row["raw"].path
