"""Staged-insert support for DataJoint's built-in codecs and for known plugin codecs (dj-zarr-codecs' `zarr`)."""

from datajoint.builtin_codecs.attach import AttachCodec
from datajoint.builtin_codecs.blob import BlobCodec
from datajoint.builtin_codecs.hash import HashCodec
from datajoint.builtin_codecs.npy import NpyCodec
from datajoint.builtin_codecs.object import ObjectCodec

from ..protocol import register_adapter
from .attach import AttachStaging
from .blob import BlobArrayWriter, BlobStaging, open_blob_array
from .hash import HashStaging
from .npy import NpyStaging
from .object import ObjectStaging
from .zarr import DjZarrCodecsStaging, ZarrArrayStaging, ZarrCodec, ZarrStaging, create_zarr_array

register_adapter(ObjectCodec, ObjectStaging())
register_adapter(NpyCodec, NpyStaging())
register_adapter(BlobCodec, BlobStaging())
register_adapter(AttachCodec, AttachStaging())
register_adapter(HashCodec, HashStaging())
register_adapter("dj_zarr_codecs:ZarrArrayCodec", DjZarrCodecsStaging())  # dj-zarr-codecs' <zarr@>, named: not imported

__all__ = [
    "AttachStaging",
    "BlobArrayWriter",
    "BlobStaging",
    "DjZarrCodecsStaging",
    "HashStaging",
    "NpyStaging",
    "ObjectStaging",
    "ZarrArrayStaging",
    "ZarrCodec",
    "ZarrStaging",
    "create_zarr_array",
    "open_blob_array",
]
