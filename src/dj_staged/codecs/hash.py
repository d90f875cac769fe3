"""Staged insert for DataJoint's built-in ``<hash@>`` declared directly: the bytes written are the value.

Example::

    with staged_insert1(RawContent) as staged:
        staged.rec["content_id"] = 1
        with staged.open("data", ".bin") as f:
            for chunk in producer:
                f.write(chunk)
"""

from __future__ import annotations

from ..addressing.hashed import HashAddressedStaging


class HashStaging(HashAddressedStaging):
    """Adapter speaking the protocol for ``datajoint.builtin_codecs.hash.HashCodec``: no prefix."""
