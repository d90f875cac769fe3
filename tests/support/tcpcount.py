"""A TCP proxy on 127.0.0.1 that counts the bytes each way: how many a client downloaded from a service.

Why: "promotion copies inside the service, no byte downloaded" is a claim about traffic. The proxy sits on
the real path between a real client (gcsfs, adlfs) and a real emulator, forwards bytes unchanged, and counts
them: :attr:`CountingProxy.downloaded` (service to client) and :attr:`CountingProxy.uploaded`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class CountingProxy:
    """Forward every connection made to ``127.0.0.1:<port>`` to ``target`` (host, port), counting bytes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.uploaded = 0
        self.downloaded = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        self._thread = threading.Thread(target=self._accept, name="tcpcount", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for source, sink, upward in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(source, sink, upward), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, upward: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
                with self._lock:
                    if upward:
                        self.uploaded += len(data)
                    else:
                        self.downloaded += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    @contextlib.contextmanager
    def counting(self) -> Iterator[dict[str, int]]:
        """Inside the block, bytes sent each way so far; final once the block ends (``downloaded``, ``uploaded``)."""
        counts = {"downloaded": 0, "uploaded": 0}
        with self._lock:
            down, up = self.downloaded, self.uploaded
        try:
            yield counts
        finally:
            with self._lock:
                counts["downloaded"], counts["uploaded"] = self.downloaded - down, self.uploaded - up

    def close(self) -> None:
        self._closing = True
        self._listener.close()
