"""The project's own tests of its ``<zarr@>`` codec; they know nothing of dj-staged."""

import datajoint as dj
import dj_zarr_codecs
import numpy as np
import pytest
import zarr


def test_zarr_is_this_projects_codec():
    assert type(dj.codecs.get_codec("zarr")) is dj_zarr_codecs.ZarrArrayCodec


def test_dj_connection_is_this_projects_fixture(dj_connection):
    import conftest

    assert [dj_connection] == conftest.CONNECTIONS


def test_insert_and_fetch(schema, store):
    @schema
    class Movie(dj.Manual):
        definition = """
        movie_id : int32
        ---
        frames : <zarr@local>
        """

    frames = np.arange(60, dtype=">f8").reshape(3, 4, 5)
    Movie.insert1({"movie_id": 1, "frames": frames})
    fetched = (Movie & {"movie_id": 1}).fetch1("frames")
    assert isinstance(fetched, zarr.Array)
    np.testing.assert_array_equal(fetched[:], frames)
    (stored,) = Movie.connection.query(f"SELECT frames FROM {Movie.full_table_name}").fetchone()
    assert stored["dtype"] == ">f8" and stored["shape"] == [3, 4, 5]
    assert stored["provenance"] == {"datajoint-python": dj.__version__, "dj-zarr-codecs": dj_zarr_codecs.__version__}


@pytest.mark.parametrize(("value", "error"), [([1, 2], TypeError), (np.array([None]), dj.DataJointError)])
def test_rejects_what_it_does_not_store(value, error):
    with pytest.raises(error):
        dj.codecs.get_codec("zarr").validate(value)
