"""What was written through a ``store()`` handle on a local store, so finalization can check it is all there.

Zarr and ``FSMap`` write through the handle's filesystem (``fsmap.fs``, see
:mod:`dj_staged.stores.sealed`): Zarr wraps it in fsspec's
``AsyncFileSystemWrapper`` and calls its ``pipe_file``, ``rm`` and friends. On
a local store that filesystem records into a :class:`WriteJournal` each file
written (path and size) and each removal made through the handle
(``zarr.open(..., mode="w")`` empties the directory first). At finalization
every recorded file must still be there with the size it was written with: a
directory removed by someone else mid-write (DataJoint's own collector, a
person) fails the commit instead of committing a row that holds only the
files written afterwards.

A handle sent to other processes (Dask workers unpickle it) writes there
without the journal; the journal knows it escaped, and what those processes
wrote is not checked file by file. On object stores nothing is journaled.
"""

from __future__ import annotations

import os
import threading


class WriteJournal:
    """Files written (full path → size) and removals made through one handle in this process."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.escaped = False
        self._lock = threading.Lock()

    def wrote(self, path: str) -> None:
        """Record the file at ``path`` as the handle left it."""
        size = os.stat(path).st_size
        with self._lock:
            self.sizes[path] = size

    def removed(self, path: str) -> None:
        """Forget ``path`` and everything under it (removed through the handle)."""
        top = path.rstrip("/")
        with self._lock:
            for recorded in [p for p in self.sizes if p == top or p.startswith(top + "/")]:
                del self.sizes[recorded]

    def missing(self) -> list[str]:
        """Recorded files that are gone or no longer have the size they were written with."""
        gone = []
        for path, size in sorted(self.sizes.items()):
            try:
                if os.stat(path).st_size != size:
                    gone.append(path)
            except FileNotFoundError:
                gone.append(path)
        return gone
