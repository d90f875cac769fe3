"""Staged-insert support for DataJoint's built-in codecs, one adapter per file."""

from datajoint.builtin_codecs.npy import NpyCodec
from datajoint.builtin_codecs.object import ObjectCodec

from ..protocol import register_adapter
from .npy import NpyStaging
from .object import ObjectStaging

register_adapter(ObjectCodec, ObjectStaging())
register_adapter(NpyCodec, NpyStaging())

__all__ = ["NpyStaging", "ObjectStaging"]
