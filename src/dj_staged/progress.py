"""Progress bars for work that makes a user wait without their own code running.

A bar appears only on a terminal (tqdm's ``disable=None`` hides it when stderr
is not a TTY) and never when ``DJ_STAGED_PROGRESS=0`` is set.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

MIN_BYTES = 256 << 20


def byte_bar(description: str, total: int | None) -> tqdm:
    """A byte-counting bar for ``total`` bytes, silent below 256 MiB, off a TTY, or when turned off."""
    off = os.environ.get("DJ_STAGED_PROGRESS", "1").lower() in ("0", "false", "no", "off")
    quiet = off or (total is not None and total < MIN_BYTES)
    return tqdm(
        total=total,
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        disable=True if quiet else None,
    )
