"""Stage a Zarr array several times larger than memory into ``<zarr@>``, against plain Zarr on a local folder.

``.venv/bin/python -m bench.zarr_memory`` (GiB from ``DJ_STAGED_ZARR_GIB``, default 4): ``make bench``'s plain Zarr and
staged ``<zarr@>`` rows (uint16 frames, one 2 MiB chunk each), once each in one process in the system's temporary
folder, neither fsyncing; prints seconds, MiB/s and peak RSS above start."""

import os
import tempfile

from .overhead import main

if __name__ == "__main__":
    mib = str(int(float(os.environ.get("DJ_STAGED_ZARR_GIB", "4")) * 1024))
    main(["--rows", "plain_zarr,zarr", "--mib", mib, "--reps", "1", "--dir", tempfile.gettempdir()])
