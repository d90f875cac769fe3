"""Staged-insert support for DataJoint's built-in codecs, one adapter per file."""

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
from .zarr import ZarrCodec, ZarrStaging

register_adapter(ObjectCodec, ObjectStaging())
register_adapter(NpyCodec, NpyStaging())
register_adapter(BlobCodec, BlobStaging())
register_adapter(AttachCodec, AttachStaging())
register_adapter(HashCodec, HashStaging())
register_adapter("dj_zarr_codecs:ZarrArrayCodec", ZarrStaging())  # another package's <zarr@>

__all__ = [
    "AttachStaging",
    "BlobArrayWriter",
    "BlobStaging",
    "HashStaging",
    "NpyStaging",
    "ObjectStaging",
    "ZarrCodec",
    "ZarrStaging",
    "open_blob_array",
]
