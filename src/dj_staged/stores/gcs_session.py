"""A resumable write to GCS: one resumable upload session, whose acknowledged bytes are its durable prefix.

The session is begun as gcsfs begins one (``initiate_upload``); each chunk of
the durable unit (a multiple of 256 KiB, as the service wants) goes up with
its ``Content-Range`` and is acknowledged with the ``Range`` the session holds;
then a checkpoint names the session's URI and that offset. The last chunk
carries the total size, which completes the object.

A resume asks the session how many bytes it holds (an empty ``PUT`` with
``Content-Range: bytes */*``, answered ``308`` with ``Range``) and goes on only
if that is the recorded offset: a session that holds more (a chunk
acknowledged after the last checkpoint) or less, or that ended, cannot be
resumed without re-sending bytes it holds or missing some. fake-gcs-server
completes the upload when asked (the object then exists): its tests turn the
query off (``DJ_STAGED_GCS_SESSION_QUERY=0``) and trust the checkpoint, which
is written only after the service acknowledged its chunk. A session the
service no longer knows (cancelled, or expired a week after it began) is a
lost prefix either way.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from fsspec.asyn import sync

from ..settings import gcs_session_query
from .resumable import Checkpoint, OnCheckpoint, ResumableWriter, lost

GRAIN = 256 << 10  # a chunk of a resumable upload, but the last, is a multiple of this


class GCSSessionWriter(ResumableWriter):
    """A resumable write of the GCS object ``path`` (``bucket/key``) through gcsfs's filesystem ``fs``."""

    def __init__(
        self, fs: Any, path: str, unit: int, on_checkpoint: OnCheckpoint, resume_from: Checkpoint | None
    ) -> None:
        unit = max(GRAIN, unit - unit % GRAIN)
        super().__init__(path, unit, on_checkpoint, resume_from.offset if resume_from is not None else 0)
        self._fs = fs
        self._bucket, self._key, _ = fs.split_path(path)
        self._buffer = bytearray()
        self._sent = self.resumed_at
        self._session: str | None = None
        if resume_from is not None:
            self._session = str(resume_from.state["session"])
            if gcs_session_query():
                self._check_session(resume_from.offset)

    def _call(self, method: str, url: str, **kwargs: Any) -> tuple[Any, bytes]:
        headers, contents = sync(self._fs.loop, self._fs._call, method, url, **kwargs)
        return headers, contents

    def _check_session(self, recorded: int) -> None:
        """Raise unless the session holds exactly ``recorded`` bytes and is still open."""
        assert self._session is not None
        try:
            headers, contents = self._call("PUT", self._session, headers={"Content-Range": "bytes */*"}, data=b"")
        except FileNotFoundError:
            raise lost(self.path, "its upload session is gone (cancelled, or expired)") from None
        if contents and _is_object(contents):
            raise lost(self.path, "its upload session ended when asked for its offset (the object was completed)")
        held = int(headers["Range"].rsplit("-", 1)[1]) + 1 if "Range" in headers else 0
        if held != recorded:
            raise lost(self.path, f"its upload session holds {held} bytes, not the {recorded} recorded")

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(data).cast("B")
        self._buffer += view
        while len(self._buffer) >= self.unit:
            self._send(bytes(self._buffer[: self.unit]), final=False)
            del self._buffer[: self.unit]
        return len(view)

    def _send(self, chunk: bytes, *, final: bool) -> None:
        """Upload ``chunk`` at the session's offset; the last one completes the object."""
        if self._session is None:
            self._session = sync(self._fs.loop, _initiate, self._fs, self._bucket, self._key)
        start, end = self._sent, self._sent + len(chunk)
        total = str(end) if final else "*"
        span = f"bytes {start}-{end - 1}/{total}" if chunk else f"bytes */{total}"
        headers, contents = self._call(
            "POST", self._session, headers={"Content-Range": span, "Content-Length": str(len(chunk))}, data=chunk
        )
        if not final:
            held = int(headers["Range"].rsplit("-", 1)[1]) + 1 if "Range" in headers else 0
            if held != end:
                raise OSError(f"{self.path}: the upload session holds {held} bytes after a chunk ending at {end}")
        self._sent = end
        if final:
            generation = json.loads(contents).get("generation") if contents else None
            self.report(Checkpoint(end, {"generation": generation}, complete=True))
        else:
            self.report(Checkpoint(end, {"session": self._session}))

    def tell(self) -> int:
        return self._sent + len(self._buffer)

    def close(self) -> None:
        if self.closed:
            return
        if self._session is None and not self.resumed_at:
            self._fs.pipe_file(self.path, bytes(self._buffer))  # smaller than a chunk: one request
            info = self._fs.info(self.path)
            self.report(Checkpoint(len(self._buffer), {"generation": info.get("generation")}, complete=True))
        else:
            self._send(bytes(self._buffer), final=True)
        self._buffer = bytearray()
        self.closed = True
        self._fs.invalidate_cache(self.path)

    def suspend(self) -> None:
        self.closed = True
        self._buffer = bytearray()

    def discard(self) -> None:
        """Cancel the session (the service frees what it holds)."""
        self.closed = True
        self._buffer = bytearray()
        if self._session is not None:
            cancel_session(self._fs, self._session)


async def _initiate(fs: Any, bucket: str, key: str) -> str:
    from gcsfs.core import initiate_upload  # type: ignore[import-untyped]  # gcsfs ships no type information

    location: str = await initiate_upload(fs, bucket, key, "application/octet-stream")
    return location


def cancel_session(fs: Any, session: str) -> None:
    """Cancel an upload session; one the service no longer knows is fine."""
    with contextlib.suppress(FileNotFoundError):
        sync(fs.loop, fs._call, "DELETE", session.replace("&ifGenerationMatch=0", ""))


def complete_object(fs: Any, path: str, checkpoint: Checkpoint) -> None:
    """Check that the object an earlier attempt completed is still the one it completed."""
    fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise lost(path, "the object it completed is gone") from None
    same = str(info.get("generation")) == str(checkpoint.state.get("generation"))
    if int(info.get("size") or 0) != checkpoint.offset or not same:
        raise lost(path, "the object it completed was replaced since")


def _is_object(contents: bytes) -> bool:
    """Whether a response body describes a stored object (a session that completed), not a session's state."""
    try:
        return bool(json.loads(contents).get("kind") == "storage#object")
    except (ValueError, AttributeError):
        return False
