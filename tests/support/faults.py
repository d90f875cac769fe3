"""A local store that fails on command, for the fault-injection tests (test-only: never installed).

DataJoint's storage-adapter plugin mechanism (entry point ``datajoint.storage``)
registers the protocol ``faulty`` from ``tests/entry_points/``, a folder that
only this test suite puts on ``sys.path`` (``tests/conftest.py``, and the
environment of the child processes it starts: ``support.paths.TEST_PYTHONPATH``): a store ``{"protocol": "faulty",
"location": "/some/dir"}`` behaves like a local ``file`` store whose filesystem
raises the error you choose on the Nth write, read, listing, stat, move, copy or
removal. Faults happen inside the filesystem, where a full disk or a dropped
network share would raise them; nothing in DataJoint or fsspec is patched.

Example::

    plan = fault_plan(location)
    plan.fail("write", nth=3, error=OSError(errno.ENOSPC, "No space left on device"))
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass, field
from typing import Any

import fsspec
from datajoint.storage_adapter import StorageAdapter
from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

from dj_staged.stores.local import LocalStore

OPERATIONS = ("open", "write", "read", "list", "stat", "move", "copy", "remove", "mkdir")
_WRITE_MODES = ("w", "a", "x", "+")


@dataclass
class Fault:
    """Raise ``error`` on matching calls ``nth`` to ``nth + times - 1`` after arming (``times=None``: forever)."""

    operation: str
    nth: int
    error: BaseException
    path: str = ""
    times: int | None = 1
    seen: int = 0

    def due(self, operation: str, path: str) -> bool:
        if operation != self.operation or self.path not in path:
            return False
        self.seen += 1
        last = None if self.times is None else self.nth + self.times - 1
        return self.seen >= self.nth and (last is None or self.seen <= last)


@dataclass
class FaultPlan:
    """The faults armed for one store location, and a record of those that fired."""

    faults: list[Fault] = field(default_factory=list)
    fired: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(
        self,
        operation: str,
        *,
        nth: int = 1,
        error: BaseException | None = None,
        path: str = "",
        times: int | None = 1,
    ) -> BaseException:
        """Arm a fault; returns the error it will raise, so a test can check it is the one the caller sees."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {OPERATIONS}")
        error = error if error is not None else OSError(errno.EIO, f"injected {operation} fault")
        with self._lock:
            self.faults.append(Fault(operation, nth, error, path, times))
        return error

    def read_only(self) -> None:
        """Make the store refuse every change, as a read-only mount does."""
        for operation in ("open", "move", "copy", "remove", "mkdir"):
            self.fail(operation, error=OSError(errno.EROFS, "Read-only file system"), times=None)

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self.faults.clear()

    def check(self, operation: str, path: str) -> None:
        """Raise the first armed fault that is due for this call."""
        with self._lock:
            for fault in self.faults:
                if fault.due(operation, str(path)):
                    self.fired.append((operation, str(path)))
                    raise fault.error


_plans: dict[str, FaultPlan] = {}


def fault_plan(location: str) -> FaultPlan:
    """The plan of the faulty store at ``location`` (created empty on first use)."""
    return _plans.setdefault(str(location), FaultPlan())


def forget_plan(location: str) -> None:
    """Drop the plan of ``location`` (end of a test)."""
    _plans.pop(str(location), None)


class FaultyFile(LocalFileOpener):
    """A local file whose reads and writes consult the plan first."""

    def __init__(self, path: str, mode: str, plan: FaultPlan, **kwargs: Any) -> None:
        self._plan = plan
        super().__init__(path, mode, **kwargs)

    def write(self, *args: Any, **kwargs: Any) -> int:
        self._plan.check("write", self.path)
        return super().write(*args, **kwargs)

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        self._plan.check("read", self.path)
        return super().read(*args, **kwargs)


class FaultyFileSystem(LocalFileSystem):
    """``LocalFileSystem`` (with ``auto_mkdir``) that consults a :class:`FaultPlan` before each operation."""

    cachable = False

    def __init__(self, plan: FaultPlan, **kwargs: Any) -> None:
        super().__init__(auto_mkdir=True, **kwargs)
        self.plan = plan

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, **kwargs: Any) -> FaultyFile:
        path = self._strip_protocol(path)
        writing = any(flag in mode for flag in _WRITE_MODES)
        if writing:
            self.plan.check("open", path)
            self.makedirs(self._parent(path), exist_ok=True)
        return FaultyFile(path, mode, self.plan, fs=self, **kwargs)

    def ls(self, path: str, detail: bool = False, **kwargs: Any) -> list:
        self.plan.check("list", path)
        return super().ls(path, detail=detail, **kwargs)

    def info(self, path: Any, **kwargs: Any) -> dict:
        self.plan.check("stat", getattr(path, "path", path))
        return super().info(path, **kwargs)

    def mv(self, path1: str, path2: str, recursive: bool = True, **kwargs: Any) -> None:
        self.plan.check("move", path1)
        return super().mv(path1, path2, recursive=recursive, **kwargs)

    def link(self, src: str, dst: str, **kwargs: Any) -> None:
        self.plan.check("move", src)
        return super().link(src, dst, **kwargs)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self.plan.check("copy", path1)
        return super().cp_file(path1, path2, **kwargs)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        self.plan.check("remove", path if isinstance(path, str) else ",".join(path))
        return super().rm(path, recursive=recursive, maxdepth=maxdepth)

    def rm_file(self, path: str) -> None:
        self.plan.check("remove", path)
        return super().rm_file(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.plan.check("mkdir", path)
        return super().makedirs(path, exist_ok=exist_ok)


class FaultyStorageAdapter(StorageAdapter):
    """DataJoint storage adapter for the ``faulty`` protocol (registered through ``tests/entry_points/``)."""

    protocol = "faulty"
    required_keys = ("location",)

    def create_filesystem(self, spec: dict[str, Any]) -> fsspec.AbstractFileSystem:
        return FaultyFileSystem(fault_plan(spec["location"]))

    def full_path(self, spec: dict[str, Any], relpath: str) -> str:
        return f"{spec['location'].rstrip('/')}/{relpath}"

    def get_url(self, spec: dict[str, Any], path: str) -> str:
        return f"file://{path}"


class FaultyStore(LocalStore):
    """dj-staged's store for the ``faulty`` protocol: a local store (registered in ``dj_staged.stores``)."""

    protocol = "faulty"


class UnsupportedStorageAdapter(FaultyStorageAdapter):
    """A DataJoint storage protocol with no dj-staged store registered for it (``unsupported``): DataJoint's own
    insert1 works on it, a staged insert refuses it."""

    protocol = "unsupported"

    def create_filesystem(self, spec: dict[str, Any]) -> fsspec.AbstractFileSystem:
        return LocalFileSystem(auto_mkdir=True)
