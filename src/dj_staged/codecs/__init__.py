"""Staged-insert support for DataJoint's built-in codecs and for known plugin codecs (dj-zarr-codecs' `zarr`)."""

from datajoint.builtin_codecs.attach import AttachCodec
from datajoint.builtin_codecs.blob import BlobCodec
from datajoint.builtin_codecs.filepath import FilepathCodec
from datajoint.builtin_codecs.hash import HashCodec
from datajoint.builtin_codecs.npy import NpyCodec
from datajoint.builtin_codecs.object import ObjectCodec

from ..protocol import StagedParticipant
from .attach import AttachStaging
from .blob import BlobArrayWriter, BlobStaging, open_blob_array
from .filepath import FilepathStaging
from .hash import HashStaging
from .npy import NpyStaging
from .object import ObjectStaging
from .zarr import DjZarrCodecsStaging, ZarrArrayStaging, ZarrCodec, ZarrStaging, create_zarr_array

#: The adapters of DataJoint's built-in codecs and of dj-zarr-codecs' ``<zarr@>`` (named: not imported), which the
#: protocol loads from the entry point group ``dj_staged.adapters`` (``pyproject.toml``).
BUILT_IN: dict[type | str, StagedParticipant] = {
    ObjectCodec: ObjectStaging(),
    NpyCodec: NpyStaging(),
    BlobCodec: BlobStaging(),
    AttachCodec: AttachStaging(),
    HashCodec: HashStaging(),
    FilepathCodec: FilepathStaging(),
    "dj_zarr_codecs:ZarrArrayCodec": DjZarrCodecsStaging(),
}

__all__ = [
    "BUILT_IN",
    "AttachStaging",
    "BlobArrayWriter",
    "BlobStaging",
    "DjZarrCodecsStaging",
    "FilepathStaging",
    "HashStaging",
    "NpyStaging",
    "ObjectStaging",
    "ZarrArrayStaging",
    "ZarrCodec",
    "ZarrStaging",
    "create_zarr_array",
    "open_blob_array",
]
