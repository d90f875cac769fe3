"""The one door to DataJoint: every name of DataJoint the engine uses, public or private, comes through here.

Only this module, :mod:`dj_staged.errors` (DataJoint's error classes are the
base of ours) and the codec modules that subclass DataJoint's codecs import
DataJoint; the conformance kit, the demo and the command line are DataJoint
*applications* (they declare tables and read ``dj.config`` as a user does) and
import its public API directly. ``tests/test_architecture.py`` holds this.

Each name says in one line what the engine uses it for, and each private one
why DataJoint's public API does not serve. The module also checks, on import,
that the installed DataJoint is one this package was written against, and
fails clearly otherwise.

Not here: the helpers ``SchemaCodec`` offers its subclasses (``_build_path``,
``_get_backend``, ``_codec_config``, ``_extract_context``), which are DataJoint's
extension API for codecs; our codec classes use them as any codec does.
"""

from __future__ import annotations

import copy
import enum
import re
import weakref
from collections.abc import Sequence
from importlib.metadata import version as installed_version
from typing import Any, cast

SUPPORTED = ((2, 3, 5), (2, 4, 0))  # >= first, < second


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_version(found: str | None = None) -> str:
    """Raise ``ImportError`` unless the installed DataJoint is ``>=2.3.5,<2.4``; return its version."""
    found = found if found is not None else installed_version("datajoint")
    low, high = SUPPORTED
    if not low <= _release(found) < high:
        raise ImportError(
            f"dj-staged supports DataJoint >=2.3.5,<2.4; DataJoint {found} is installed. "
            "Install a supported DataJoint (pip install 'datajoint>=2.3.5,<2.4') or a dj-staged made for yours."
        )
    return found


DATAJOINT_VERSION = check_version()

# ---- DataJoint's public API, as the engine uses it (imported after the version check above)

from datajoint.errors import LostConnectionError as LostConnectionError  # noqa: E402  a dead connection, as DataJoint says
from datajoint.errors import MissingAttributeError as MissingAttributeError  # noqa: E402  a NOT NULL column left empty
from datajoint.hash_registry import build_hash_path as build_hash_path  # noqa: E402  a content's canonical path
from datajoint.storage import build_object_path as build_object_path  # noqa: E402  insert1's schema-addressed path
from datajoint.storage import generate_token as generate_token  # noqa: E402  a staging object's random token
from datajoint.table import Table as Table  # noqa: E402  the class enable() gives staged_insert1 and staged_insert

# ---- DataJoint's values, as the engine's annotations name them. DataJoint ships no type information (no py.typed),
# so to a type checker each is Any; the name says what it stands for. A table is annotated with ``Table`` above,
# DataJoint's own class (``type[Table]`` where a table class is taken too).

Connection = Any  # a datajoint.Connection: query(), in_transaction, adapter, conn_info, connect(), ...
Schema = Any  # a datajoint.Schema: database, connection, list_tables(), get_table(), drop(), ...
Heading = Any  # a table's datajoint.heading.Heading: attributes, names, primary_key, hash_objects, ...
Attribute = Any  # one attribute of a Heading: type, codec, store, uuid, string, json, _replace(), ...
Config = Any  # DataJoint's configuration (dj.config, or a connection's own): stores, get_store_spec(), ...
Codec = Any  # a codec DataJoint resolved for an attribute (datajoint.codecs.Codec, or a placeholder for a missing one)
StorageBackend = Any  # DataJoint's StorageBackend of one store: fs, get_fsmap(), _full_path()
Value = Any  # a value DataJoint inserts or fetches: whatever a codec takes or gives (an array, bytes, a reference)


class DatabaseFailure(enum.Enum):
    """What a database error means to dj-staged: the one place psycopg2's and DataJoint's errors are told apart."""

    CONNECTION_LOST = "connection lost"  # the server may or may not have done what was asked
    FENCE = "lease lost"  # a commit guard found its lease lock no longer its session's (FENCE_SQLSTATE)
    LOCK_TIMEOUT = "lock timeout"  # the session's lock_timeout ran out while it waited for a lock
    OTHER = "other"  # the server refused the statement: nothing it did stands


FENCE_SQLSTATE = "DJS01"  # the commit guard raises it when the lease lock is not this session's any more
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's lock_not_available: lock_timeout ran out


def database_failure(error: BaseException) -> DatabaseFailure:
    """Which :class:`DatabaseFailure` ``error`` (raised by a query through DataJoint) is.

    DataJoint translates the server's errors it knows into its own classes and
    passes the others on as psycopg2's, with their SQLSTATE in ``pgcode``; a
    connection that died has no SQLSTATE at all.
    """
    if isinstance(error, LostConnectionError):
        return DatabaseFailure.CONNECTION_LOST
    code = getattr(error, "pgcode", None)
    if code == FENCE_SQLSTATE:
        return DatabaseFailure.FENCE
    if code == LOCK_NOT_AVAILABLE:
        return DatabaseFailure.LOCK_TIMEOUT
    import psycopg2

    if isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError) and not code:
        return DatabaseFailure.CONNECTION_LOST
    return DatabaseFailure.OTHER


def own_insert(table: Table, *, batch: bool) -> bool:
    """Whether ``table`` has an ``insert1`` (or, for a batch, an ``insert``) of its own: a method its class
    defines over DataJoint's, or one set on the instance; a staged row then goes through it, as DataJoint's own
    staged insert sends its row through ``table.insert1``. (DataJoint's ``insert1`` calls ``insert``, so for a
    single row either counts.)"""
    names = ("insert",) if batch else ("insert1", "insert")
    # The class's own definition is looked up along the MRO: DataJoint's table metaclass answers attribute
    # access on the class itself with a bound method of a fresh instance.
    return any(
        name in vars(table)
        or next(vars(cls)[name] for cls in type(table).__mro__ if name in vars(cls))
        is not _datajoint_method(table, name)
        for name in names
    )


def _datajoint_method(table: Table, name: str) -> Any:
    """DataJoint's own method ``name`` for ``table``'s class: the first definition in the class's MRO that comes
    from the ``datajoint`` package, passing over a user's override."""
    return next(
        vars(cls)[name] for cls in type(table).__mro__ if name in vars(cls) and cls.__module__.startswith("datajoint.")
    )


def schema_on(connection: Connection, name: str) -> Schema:
    """The existing schema ``name`` reached through ``connection`` (a collector's dedicated session)."""
    import datajoint as dj

    return dj.Schema(name, connection=connection, create_schema=False, create_tables=False)


def list_schemas(connection: Connection) -> set[str]:
    """The schemas ``connection`` can list."""
    import datajoint as dj

    return set(dj.list_schemas(connection=connection))


def free_table(connection: Connection, full_name: str) -> Table:
    """DataJoint's view of a table by its full name, without its class (a jobs table, a lookup)."""
    import datajoint as dj

    return dj.FreeTable(connection, full_name)


def class_name_of(table_name: str) -> str:
    """The class name DataJoint derives a table name from (``analysis`` → ``Analysis``)."""
    from datajoint.utils import to_camel_case

    return str(to_camel_case(table_name))


def connection_like(connection: Connection) -> Connection:
    """A new DataJoint connection to the same server, as the same user, with the same configuration (a collector's
    session of its own for the exclusive gate)."""
    import datajoint as dj

    info = connection.conn_info
    return dj.Connection(
        host=info["host"],
        user=info["user"],
        password=info["passwd"],
        port=info["port"],
        use_tls=info.get("ssl_input"),
        database_name=info.get("database_name"),
        backend=connection.adapter.backend,
        config_override=config_of(connection),
    )


class SideSession:
    """A second database session to the server of a DataJoint connection, in psycopg2's asynchronous mode:
    :meth:`send` returns as soon as the statement is on its way, :meth:`answer` waits for its first value.

    It connects with the parameters the connection's driver (private ``_conn``) connected with, so it reaches
    the same server as the same user; DataJoint's ``Connection`` has no asynchronous mode of its own. It runs
    in autocommit: each statement sees what is committed when it runs.
    """

    def __init__(self, connection: Connection) -> None:
        import psycopg2

        driver = connection._conn
        self._session = psycopg2.connect(**driver.get_dsn_parameters(), password=driver.info.password, async_=True)
        self._wait()
        self._cursor = self._session.cursor()

    def _wait(self) -> None:
        """Poll until the connection or the statement in flight is done (``psycopg2.extras.wait_select`` would
        swallow a ``KeyboardInterrupt``)."""
        import select

        from psycopg2.extensions import POLL_OK, POLL_READ, POLL_WRITE

        while (state := self._session.poll()) != POLL_OK:
            if state == POLL_READ:
                select.select([self._session.fileno()], [], [])
            elif state == POLL_WRITE:
                select.select([], [self._session.fileno()], [])
            else:
                raise self._session.OperationalError(f"unexpected poll state {state}")

    def send(self, sql: str, args: tuple[Any, ...]) -> None:
        """Send one statement; its answer is read by :meth:`answer`."""
        self._cursor.execute(sql, args)

    def answer(self) -> Any:
        """The first value of the first row the last statement sent returns, once it has come."""
        self._wait()
        return self._cursor.fetchone()[0]

    def close(self) -> None:
        self._session.close()


_prefixes: weakref.WeakKeyDictionary[StorageBackend, tuple[str, str]] = weakref.WeakKeyDictionary()


def full_path(backend: StorageBackend, path: str) -> str:
    """The filesystem path of a store-relative path.

    ``StorageBackend`` offers ``open``/``exists``/``get_fsmap`` on relative
    paths but no public way to address the same object through its ``fs``,
    which listing, walking and server-side copies need. Every protocol's
    mapping appends the relative path to a fixed prefix; that prefix is asked
    of DataJoint once per backend, since building it is slow enough to show in
    a batch of many small rows.
    """
    known = _prefixes.get(backend)
    if known is None:
        known = _prefixes[backend] = (backend._full_path("x")[:-1], backend._full_path(""))
    prefix, root = known
    return prefix + path if path else root


def all_attributes(heading: Heading) -> dict[str, Attribute]:
    """Every attribute of a heading, hidden ones included (``heading.attributes`` leaves hidden ones out)."""
    _ = heading.attributes  # loads the heading from the database on first use
    return cast(dict[str, Attribute], heading._attributes)


def with_json_columns(table: Table, fields: set[str]) -> Table:
    """A private copy of ``table`` whose ``fields`` are plain JSON columns without a codec.

    ``insert1`` runs every value through its codec chain; a finalized column
    value must be inserted as it is. DataJoint has no public switch for that,
    so the copy gets a copied heading whose attributes for ``fields`` drop the
    codec. Nothing shared is modified.
    """
    heading = table.heading
    attributes = all_attributes(heading)
    view_heading = copy.copy(heading)
    view_heading._attributes = {
        name: attr._replace(codec=None, json=True) if name in fields else attr for name, attr in attributes.items()
    }
    view = copy.copy(table)
    view._heading = view_heading
    return view


class _StatementRecorder:
    """Stands in for a connection: records the statements DataJoint would send, and sends nothing."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.statements: list[tuple[str, list[Value]]] = []

    def query(self, query: str, args: Sequence[Value] | None = (), **options: object) -> None:
        self.statements.append((query, list(args or ())))
        return None

    def __getattr__(self, name: str) -> Any:  # the connection's (DataJoint's: untyped)
        return getattr(self._connection, name)


def insert_statements(view: Table, rows: list[dict[str, Any]], **options: object) -> list[tuple[str, list[Value]]]:
    """The SQL (and arguments) DataJoint's ``insert`` would execute for ``rows``, without executing it.

    Used to check a row against the table in one round trip (``BEGIN; INSERT; ROLLBACK``):
    DataJoint builds the statement and runs it in one call, with no public way to
    build it alone, so the copy's private ``_connection`` is a recorder.
    """
    recorder = _StatementRecorder(view.connection)
    probe = copy.copy(view)
    probe._connection = recorder
    # DataJoint's own insert, not a table's override: the trial checks the row against DataJoint and the table,
    # and a user's insert runs once, at the commit (see own_insert).
    _datajoint_method(probe, "insert")(probe, rows, **options)
    return recorder.statements


def encode_as_insert(table: Table, name: str, value: Value, key: dict[str, Any]) -> Value:
    """``value`` of attribute ``name`` as ``table.insert1`` encodes it for a row of primary key ``key``: its
    codec chain's ``encode`` called with the same key, context and store name (``Table.__make_placeholder``, which
    does this, is private), for a value whose column DataJoint's codec computes (``<filepath@>``'s reference)."""
    from datajoint.codecs import _accepts_kwarg, resolve_dtype

    attr = table.heading[name]
    config = table.connection._config
    _dtype, chain, store = resolve_dtype(f"<{attr.codec.name}>", store_name=attr.store)
    legacy = {"_schema": table.database, "_table": table.table_name, "_field": name, "_config": config, **key}
    context = {"schema": table.database, "table": table.table_name, "field": name, "config": config}
    for codec in chain:
        options: dict[str, Any] = {}
        if _accepts_kwarg(type(codec).encode, "store_name"):
            options["store_name"] = store
        if _accepts_kwarg(type(codec).encode, "context"):
            options["context"] = context
        value = codec.encode(value, key=legacy, **options)
    return value


def registered_codec(name: str) -> Codec | None:
    """The codec registered under ``name``, without loading entry points.

    ``datajoint.codecs.get_codec`` loads every ``datajoint.codecs`` entry point
    first, which would register whichever provider of a name is listed first.
    """
    from datajoint.codecs import _codec_registry

    return _codec_registry.get(name)


def is_missing_codec(codec: Codec) -> bool:
    """Whether ``codec`` is DataJoint's placeholder for a codec not registered in this process (no public test)."""
    from datajoint.heading import _MissingType

    return isinstance(codec, _MissingType)


def is_hash_name(name: str) -> bool:
    """Whether a file name is a content hash as DataJoint's collector recognizes one (its pattern is private)."""
    from datajoint.gc import _BASE32_HASH

    return bool(_BASE32_HASH.match(name))


def is_covered(path: str, referenced: set[str]) -> bool:
    """DataJoint's collector's rule for whether a stored file belongs to a referenced object (private helper)."""
    from datajoint.gc import _is_covered

    return cast(bool, _is_covered(path, referenced))


def inserts_allowed(table: Table) -> bool:
    """Whether DataJoint would accept a direct insert into ``table`` now.

    Auto-populated tables accept inserts only inside ``make()``, a state
    DataJoint keeps in the private class attribute ``_allow_insert``.
    """
    return bool(getattr(table, "_allow_insert", True))


def config_of(connection: Connection) -> Config:
    """The configuration a connection was made with (``Connection`` keeps it privately as ``_config``)."""
    return connection._config


def reset_transaction_state(connection: Connection) -> None:
    """Forget a transaction the server already ended (the connection was lost mid-transaction).

    ``Connection.in_transaction`` trusts a private flag that a lost ``COMMIT``
    leaves set, which would make the next ``start_transaction`` fail.
    """
    connection._in_transaction = False


def backend_pid(connection: Connection) -> int | None:
    """The server process of the connection's current database session, None if its driver connection is closed.

    The driver (``Connection`` keeps it privately as ``_conn``) knows the pid
    without a round trip; a lease lock can only be released by that session.
    """
    driver = getattr(connection, "_conn", None)
    try:
        return int(driver.get_backend_pid()) if driver is not None and not driver.closed else None
    except Exception:
        return None


def server_version(connection: Connection) -> int:
    """The server's version number (``180001``), as the driver learned it at connect time (private ``_conn``)."""
    driver = getattr(connection, "_conn", None)
    return int(getattr(driver, "server_version", 0) or 0)


def store_backend(requested: str | None, config: Config) -> StorageBackend:
    """DataJoint's ``StorageBackend`` of a store (its filesystem and path mapping); a new one on every call."""
    from datajoint.hash_registry import get_store_backend

    return get_store_backend(requested, config=config)


def load_config_file(config: Config, path: str) -> None:
    """Load a ``datajoint.json`` named on the command line the way DataJoint loads the one it finds itself.

    ``Config.load`` merges the file's values, but only for the file it finds at
    import does DataJoint then re-apply ``DJ_STORES`` (which wins over the
    file) and read the ``.secrets/`` folder beside it (private
    ``_apply_stores_env`` and ``_load_secrets``).
    """
    from pathlib import Path

    from datajoint.settings import find_secrets_dir

    config.load(path)
    config._apply_stores_env()
    secrets = find_secrets_dir(Path(path).resolve())
    if secrets is not None:
        config._load_secrets(secrets)
