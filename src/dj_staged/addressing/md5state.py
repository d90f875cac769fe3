"""An MD5 whose state can be saved and restored: a resumed hash-addressed write goes on hashing where it stopped.

A resumable write's content may sit where nothing can read it back: the parts
of an S3 multipart upload, a GCS upload session and Azure's uncommitted blocks
cannot be downloaded before the object is complete. So the hash of a resumed
hash-addressed write cannot come from re-reading its durable prefix; instead
each checkpoint records the MD5's state at its offset, and the resumed write
restores it and hashes only the bytes it adds (no pass over the prefix at all).

``hashlib`` cannot export its state, so this is OpenSSL's own MD5 (the library
``hashlib`` uses), called through ``ctypes``: its ``MD5_CTX`` is 92 bytes of
plain data (four chaining words, the bit count, the pending block and its
length), recorded as such, tagged with the layout. The calls release the GIL,
as ``hashlib``'s do. Where that library or its ``MD5_*`` functions are missing
(an OpenSSL built without deprecated functions), :func:`available` is False: a
resumed write still goes on from its durable prefix, and its hash comes from one
read of the whole stored value when the block ends. A prefix whose attempt could
not record its state is read once to rebuild it on a local store; on an object
store, which cannot read an incomplete object back, the write starts over,
saying why.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import hashlib
from typing import Any

import numpy as np

_STATE_SIZE = 92  # sizeof(MD5_CTX): A, B, C, D, Nl, Nh, data[16], num (32-bit words)
_BUFFER = 128  # room for it, whatever padding a build adds
TAG = "openssl-md5-ctx-92"


@functools.cache
def _library() -> Any | None:
    """libcrypto with its ``MD5_*`` functions, checked against ``hashlib``; None where it cannot be had."""
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
        for function in (library.MD5_Init, library.MD5_Update, library.MD5_Final):
            function.restype = ctypes.c_int
        library.MD5_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return library if _works(library) else None


def _works(library: Any) -> bool:
    """Whether saving and restoring a state midway gives ``hashlib``'s digest."""
    data = bytes(range(256)) * 9
    first = ResumableMD5.__new__(ResumableMD5)
    first._lib, first._context = library, ctypes.create_string_buffer(_BUFFER)
    library.MD5_Init(first._context)
    first.update(data[:777])
    second = ResumableMD5.from_state(first.state(), library)
    second.update(data[777:])
    return second.digest() == hashlib.md5(data).digest()


def available() -> bool:
    """Whether an MD5 state can be saved and restored here."""
    return _library() is not None


class ResumableMD5:
    """MD5 with ``update``, ``digest`` and ``copy`` as ``hashlib``'s, plus :meth:`state` and :meth:`from_state`."""

    name = "md5"

    def __init__(self) -> None:
        library = _library()
        if library is None:
            raise RuntimeError("OpenSSL's MD5 functions are not available: a digest state cannot be saved here")
        self._lib = library
        self._context = ctypes.create_string_buffer(_BUFFER)
        library.MD5_Init(self._context)

    def update(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        if not view.nbytes:
            return
        array = np.frombuffer(view, dtype=np.uint8)  # the caller's buffer, not a copy
        self._lib.MD5_Update(self._context, array.ctypes.data, view.nbytes)

    def copy(self) -> ResumableMD5:
        twin = ResumableMD5.__new__(ResumableMD5)
        twin._lib, twin._context = self._lib, ctypes.create_string_buffer(self._context.raw, _BUFFER)
        return twin

    def digest(self) -> bytes:
        out = ctypes.create_string_buffer(16)
        self._lib.MD5_Final(out, self.copy()._context)
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()

    def state(self) -> str:
        """The state as text for a checkpoint: the layout's tag and the ``MD5_CTX`` bytes."""
        return f"{TAG}:{base64.b64encode(self._context.raw[:_STATE_SIZE]).decode()}"

    @classmethod
    def from_state(cls, state: str, library: Any = None) -> ResumableMD5:
        """The MD5 a :meth:`state` was taken of; ``ValueError`` for a state of another layout."""
        tag, _, data = state.partition(":")
        raw = base64.b64decode(data)
        if tag != TAG or len(raw) != _STATE_SIZE:
            raise ValueError(f"not an MD5 state of this layout ({tag!r})")
        restored = cls.__new__(cls)
        restored._lib = library if library is not None else _library()
        if restored._lib is None:
            raise ValueError("OpenSSL's MD5 functions are not available here")
        restored._context = ctypes.create_string_buffer(raw, _BUFFER)
        return restored
