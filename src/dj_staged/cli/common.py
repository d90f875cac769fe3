"""What every command shares: DataJoint's configuration, the connection, logging, and durations."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from datetime import timedelta
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from .._datajoint import Connection, Schema

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MISSING_CONFIG_WARNING = r"No datajoint\.json found"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CommandError(Exception):
    """A command cannot run as asked; the message says what to fix."""


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"24h"``, ``"2d"``, ``"1w"`` or plain seconds (``"0"``) as a timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 30m, 24h, 2d, 1w or seconds)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def common_options(*, suppress: bool) -> argparse.ArgumentParser:
    """``--config``, ``-v`` and ``--log-level``, accepted before and after the command name.

    The copy a command gets (``suppress=True``) has no defaults of its own, so
    it does not overwrite what was given before the command name.
    """
    default = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--config", metavar="FILE", default=default, help="a datajoint.json to load (and the .secrets/ beside it)"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="log what dj-staged does: -v for INFO, -vv for DEBUG (to stderr)",
    )
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        type=str.upper,
        default=default,
        help="level of dj-staged's log lines (default WARNING; overrides -v)",
    )
    return parser


def datajoint_settings_given(config: str | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the user said where to connect: ``--config``, or any ``DJ_*`` setting (ours, ``DJ_STAGED_*``, aside)."""
    return bool(config) or any(name.startswith("DJ_") and not name.startswith("DJ_STAGED_") for name in environ)


def import_datajoint(config: str | None) -> ModuleType:
    """Import DataJoint, its log lines sent to stderr (stdout is for the report).

    DataJoint warns at import when it finds no ``datajoint.json``; when
    ``--config`` or ``DJ_*`` settings say where to connect, that warning is
    wrong for this command and is silenced (only this one, only during the import).
    """
    with warnings.catch_warnings():
        if datajoint_settings_given(config):
            warnings.filterwarnings("ignore", message=MISSING_CONFIG_WARNING, category=UserWarning)
        import datajoint as dj
    logs_to_stderr()
    return cast(ModuleType, dj)  # the datajoint package (untyped)


def load_config(dj: ModuleType, config: str) -> None:
    """Load ``--config FILE`` (and the ``.secrets/`` beside it); a file DataJoint refuses is an error naming it."""
    from .._datajoint import load_config_file

    if not os.path.isfile(config):
        raise CommandError(f"--config {config}: no such file")
    try:
        load_config_file(dj.config, config)
    except ValueError as error:  # JSON syntax, or a value DataJoint's settings refuse
        raise CommandError(f"--config {config}: {error}") from error


def log_level(args: argparse.Namespace) -> int:
    """The level of the ``dj_staged`` loggers: ``--log-level``, else ``-v`` (INFO) / ``-vv`` (DEBUG), else WARNING."""
    if getattr(args, "log_level", None):
        return cast(int, getattr(logging, args.log_level))
    verbose = getattr(args, "verbose", 0) or 0
    return logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING


@contextlib.contextmanager
def logging_to_stderr(level: int) -> Iterator[None]:
    """Show the ``dj_staged`` loggers' lines at ``level`` and above on stderr for the duration of the command."""
    package = logging.getLogger("dj_staged")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    previous = package.level
    package.addHandler(handler)
    package.setLevel(level)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)


def logs_to_stderr() -> None:
    """Keep stdout for the report: DataJoint logs (``connected to ...``) to stdout by default."""
    for handler in logging.getLogger("datajoint").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def connect(dj: ModuleType) -> Connection:
    """DataJoint's connection from its configuration; a failure names the settings to fix."""
    try:
        return dj.conn()
    except Exception as error:
        database = dj.config.database
        raise CommandError(
            f"cannot connect to the database {database.backend} at {database.host}:{database.port} "
            f"as {database.user!r} ({type(error).__name__}: {error}); set database.* in datajoint.json "
            "(or --config FILE), or DJ_HOST, DJ_PORT, DJ_USER, DJ_PASS, DJ_BACKEND"
        ) from error


def stores_to_use(dj: ModuleType, named: list[str] | None) -> list[str]:
    """``--store`` values, else every configured store; each checked against DataJoint's store rules."""
    from ..status import configured_stores

    stores = named or configured_stores(dict(dj.config.stores))
    if not stores:
        raise CommandError("no stores are configured: set stores in datajoint.json (or DJ_STORES), or give --store")
    for store in stores:
        try:
            dj.config.get_store_spec(store)
        except dj.DataJointError as error:
            raise CommandError(f"store {store!r}: {error}") from error
    return stores


def check_listable(names: list[str], listable: set[str]) -> None:
    """A schema name the connection cannot list is an error naming it."""
    missing = [name for name in names if name not in listable]
    if missing:
        raise CommandError(
            f"Schema {', '.join(repr(m) for m in missing)} does not exist (or this connection cannot list it)"
        )


def schemas_named(dj: ModuleType, connection: Connection, names: list[str], listable: set[str]) -> list[Schema]:
    """``dj.Schema`` objects for ``names``, each checked with :func:`check_listable`."""
    check_listable(names, listable)
    return [dj.Schema(name, connection=connection, create_schema=False, create_tables=False) for name in names]


def run_command(args: argparse.Namespace) -> int:
    """Import DataJoint, connect, and run the chosen command with logging set up."""
    config = getattr(args, "config", None)
    with logging_to_stderr(log_level(args)):
        dj = import_datajoint(config)
        if config:
            load_config(dj, config)
        try:
            return cast(int, args.run(args, dj))  # the command's run(args, dj): its exit status
        except CommandError:
            raise
        except dj.DataJointError as error:
            raise CommandError(str(error)) from error
        except Exception as error:  # a store or server refused: say what, keep the traceback for -vv
            logger.debug("dj-staged %s failed", args.command, exc_info=True)
            raise CommandError(f"{type(error).__name__}: {error} (-vv shows where)") from error
