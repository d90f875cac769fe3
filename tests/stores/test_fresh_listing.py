"""No finalization decision rests on a cached listing (an S3 filesystem keeps its listings).

s3fs caches what it listed. Zarr writes through a filesystem instance of its own (an asynchronous copy made
from the store's), so a listing cached by the store's instance before the block, here one a user made, knows
nothing of what Zarr wrote. Finalization asks the service itself.
"""

from __future__ import annotations

import numpy as np
import zarr
from datajoint.hash_registry import get_store_backend
from support.tables import declare

import dj_staged
from dj_staged._datajoint import full_path


def stage_movie(table, key: int, value: int) -> None:
    with dj_staged.staged_insert1(table) as staged:
        staged.rec["movie_id"] = key
        z = zarr.open(staged.store("movie", ".zarr"), mode="w", shape=(4, 8), chunks=(2, 8), dtype="uint8")
        z[:] = value


def test_a_listing_cached_meanwhile_does_not_hide_what_zarr_wrote(djstaged_schema, djstaged_s3_store):
    Movie = declare(djstaged_schema, "Movie", f"movie_id : int32\n---\nmovie : <zarr@{djstaged_s3_store.name}>")
    stage_movie(Movie, 1, 1)
    (Movie & {"movie_id": 1}).delete()
    backend = get_store_backend(djstaged_s3_store.name)
    listed = backend.fs.find(full_path(backend, f"_schema/{djstaged_schema.database}"))  # a user looks around
    assert any(path.endswith("zarr.json") for path in listed)
    stage_movie(Movie, 1, 2)
    np.testing.assert_array_equal((Movie & {"movie_id": 1}).fetch1("movie")[:], np.full((4, 8), 2, dtype="uint8"))
