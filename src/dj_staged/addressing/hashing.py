"""DataJoint's content hash, computed while the caller writes or by one streaming re-read.

The hash is ``datajoint.hash_registry.compute_hash``'s: MD5 of the stored bytes,
base32, padding stripped, lowercase. ``compute_hash`` takes the content in one
``bytes`` object; these helpers feed the same digest incrementally so nothing is
held in memory, and :func:`encode_digest` is checked against it in the tests.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from ..progress import byte_bar

CHUNK = 8 << 20


def encode_digest(md5: Any) -> str:
    """The 26-character form ``compute_hash`` gives for the bytes fed to ``md5``."""
    return base64.b32encode(md5.digest()).decode("ascii").rstrip("=").lower()


class HashingWriter:
    """A write handle that feeds every byte to MD5 as long as the writes are sequential.

    Any seek or truncate makes the running digest unusable (``sequential`` turns
    False) and finalization re-reads the object instead. ``hashing=False`` skips
    the digest from the start, for an object whose stored bytes are not known
    yet (a placeholder or missing prefix): it would be re-read anyway, and MD5
    is most of the cost of a write.
    """

    def __init__(self, raw: Any, prefix: bytes = b"", *, hashing: bool = True) -> None:
        self._raw = raw
        self._md5 = hashlib.md5()
        self.hashing = hashing
        self.sequential = True
        if prefix:
            self.write(prefix)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.sequential and self.hashing:
            self._md5.update(view)
        written = self._raw.write(view)
        return len(view) if written is None else written

    def seek(self, offset: int, whence: int = 0) -> int:
        self.sequential = False
        return self._raw.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        self.sequential = False
        return self._raw.truncate(size) if size is not None else self._raw.truncate()

    def tell(self) -> int:
        return self._raw.tell()

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return self._raw.seekable()

    @property
    def md5(self) -> Any:
        """The running digest (meaningful only while ``hashing`` and ``sequential``)."""
        return self._md5

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rehash(backend: Any, path: str, prefix: bytes = b"", size: int | None = None) -> Any:
    """MD5 of ``prefix`` followed by the object at ``path``, read once in chunks."""
    md5 = hashlib.md5(prefix)
    with backend.open(path, "rb") as source, byte_bar("hashing", size) as bar:
        while chunk := source.read(CHUNK):
            md5.update(chunk)
            bar.update(len(chunk))
    return md5
