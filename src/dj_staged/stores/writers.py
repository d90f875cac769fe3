"""The shape of a store's own write handles: a binary file written in order, never read or seeked, that completes
its object on ``close()`` and abandons it on ``discard()``; used as a context manager, an exception discards."""

from __future__ import annotations

from typing import Self


class WriteOnlyFile:
    """What every store write handle of dj-staged shares; subclasses write, close and discard."""

    mode = "wb"
    closed = False

    def close(self) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Nothing: each writer makes its bytes durable at its own pace."""

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
