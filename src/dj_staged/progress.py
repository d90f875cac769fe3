"""Progress for long waits that run none of the caller's code: the core reports, this edge shows.

The core (re-reading to hash, framing, copying on S3) takes an fsspec
:class:`~fsspec.callbacks.Callback` and calls ``set_size``/``relative_update``.
:func:`progress_callback` picks how to show it:

- nothing when ``DJ_STAGED_PROGRESS=0`` (also ``false``, ``no``, ``off``), or
  for less than 256 MiB;
- a notebook widget (``tqdm.notebook``) in a Jupyter kernel with ``ipywidgets``;
- a terminal bar (``tqdm``) when stderr is a terminal;
- nothing otherwise (logs, pipes, CI).

tqdm is imported only when a bar is shown, so importing dj-staged never warns.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback, TqdmCallback

MIN_BYTES = 256 << 20
ENV = "DJ_STAGED_PROGRESS"


def progress_enabled() -> bool:
    """Whether progress may be shown at all (``DJ_STAGED_PROGRESS``, default on)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return callable(get_ipython) and type(get_ipython()).__name__ == "ZMQInteractiveShell"


def progress_callback(description: str, total: int | None) -> Callback:
    """The callback to report a wait of ``total`` bytes on: a bar where a person watches, else a no-op."""
    if not progress_enabled() or (total is not None and total < MIN_BYTES):
        return DEFAULT_CALLBACK
    options: dict[str, Any] = {
        "desc": description,
        "unit": "B",
        "unit_scale": True,
        "unit_divisor": 1024,
        "leave": False,
    }
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm

        return TqdmCallback(tqdm_kwargs=options, tqdm_cls=notebook_tqdm, size=total)
    if sys.stderr is not None and sys.stderr.isatty():
        from tqdm import tqdm

        return TqdmCallback(tqdm_kwargs=options, tqdm_cls=tqdm, size=total)  # the bar appears at the first update
    return DEFAULT_CALLBACK
