"""Run a function in a spawned child process that stops itself (real SIGSTOP) at named points.

Why: a test can freeze a writer at an exact step of a protocol, let another party act, and resume it, with
no timing involved. Inside the child, ``pause_here("label")`` tells the parent the label and stops the
process; the parent's :meth:`PausableChild.wait_paused` returns once the process is really stopped, and
:meth:`PausableChild.resume` sends SIGCONT.

The target runs in a fresh interpreter (multiprocessing's "spawn"), so it must be importable by name:
a module-level function of a module on ``sys.path`` (the child gets the parent's ``sys.path``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

_channel: Connection | None = None  # set in the child: where pause_here announces its label

POLL_INTERVAL = 0.001  # between two reads of /proc/<pid>/stat while waiting for the stop to take effect


class ChildError(Exception):
    """The target raised in the child: its exception's type name, message and formatted traceback."""

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(f"{type_name}: {message}\n--- child traceback ---\n{traceback_text}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback_text


class ChildDied(Exception):
    """The child ended without reporting a result (killed by a signal, or exited early)."""

    def __init__(self, exitcode: int | None) -> None:
        self.exitcode = exitcode
        self.signal = signal.Signals(-exitcode) if exitcode is not None and exitcode < 0 else None
        how = f"killed by {self.signal.name}" if self.signal else f"exited with code {exitcode}"
        super().__init__(f"child {how} without reporting a result")


def pause_here(label: str) -> None:
    """In a :class:`PausableChild`'s target: tell the parent ``label``, then stop this process until SIGCONT."""
    if _channel is None:
        raise RuntimeError("pause_here() only works inside a PausableChild's target (it would stop this process)")
    _channel.send(("paused", label))
    os.kill(os.getpid(), signal.SIGSTOP)


def _run_child(channel: Connection, target: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """The child's entry point: run the target and send back its return value or its error."""
    global _channel
    _channel = channel
    try:
        result = target(*args, **kwargs)
    except BaseException as error:
        channel.send(("error", (type(error).__name__, str(error), traceback.format_exc())))
        return
    try:
        channel.send(("result", result))
    except Exception as error:  # the return value does not pickle
        channel.send(("error", (type(error).__name__, f"cannot send the result back: {error}", traceback.format_exc())))


def process_state(pid: int) -> str:
    """The state letter of process ``pid`` from ``/proc/<pid>/stat`` (``T``: stopped by a signal)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]  # the name in parentheses may hold spaces


class PausableChild:
    """``target(*args, **kwargs)`` in a spawned process that can pause itself with :func:`pause_here`."""

    def __init__(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._inbox, child_end = context.Pipe(duplex=False)
        self._child_end: Connection | None = child_end
        self._process = context.Process(target=_run_child, args=(child_end, target, args, kwargs), daemon=True)
        self._outcome: tuple[str, Any] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return self._process.pid

    @property
    def exitcode(self) -> int | None:
        """None while running; negative: killed by that signal."""
        return self._process.exitcode

    def start(self) -> PausableChild:
        """Start the child process."""
        self._process.start()
        assert self._child_end is not None
        self._child_end.close()  # only the child writes: its end closing is how a dead child shows
        self._child_end = None
        return self

    def _receive(self, deadline: float) -> tuple[str, Any]:
        """The child's next message, ("died", None) if it ended without one."""
        if not self._inbox.poll(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("no message from the child in time")
        try:
            return self._inbox.recv()
        except EOFError:
            return ("died", None)

    def wait_paused(self, label: str, timeout: float = 60) -> None:
        """Block until the child announced ``label`` and its process is in the stopped state."""
        deadline = time.monotonic() + timeout
        kind, value = self._receive(deadline)
        if kind == "paused" and value != label:
            raise AssertionError(f"child paused at {value!r}, expected {label!r}")
        if kind != "paused":
            self._outcome = (kind, value)
            self._process.join(max(0.0, deadline - time.monotonic()))
            raise AssertionError(f"child ended before pausing at {label!r}") from self._failure()
        assert self.pid is not None
        while (state := process_state(self.pid)) != "T":
            if state in ("Z", "X"):
                raise AssertionError(f"child died at {label!r} instead of stopping")
            if time.monotonic() > deadline:
                raise TimeoutError(f"child announced {label!r} but is not stopped (state {state!r})")
            time.sleep(POLL_INTERVAL)

    def resume(self) -> None:
        """Let a paused child go on (SIGCONT)."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the child, stopped or not."""
        assert self.pid is not None
        if self._process.exitcode is None:
            os.kill(self.pid, signal.SIGKILL)

    def _failure(self) -> Exception | None:
        if self._outcome is None:
            return None
        kind, value = self._outcome
        if kind == "error":
            return ChildError(*value)
        if kind == "died":
            return ChildDied(self._process.exitcode)
        return None

    def join(self, timeout: float = 60) -> Any:
        """Wait for the child to end; return the target's return value.

        Raises :class:`ChildError` if the target raised, :class:`ChildDied` if the child ended without a
        result (``.signal`` is ``SIGKILL`` after :meth:`kill`), ``TimeoutError`` if it is still running.
        """
        deadline = time.monotonic() + timeout
        if self._outcome is None:
            kind, value = self._receive(deadline)
            if kind == "paused":
                raise AssertionError(f"child paused at {value!r} while being joined: resume it first")
            self._outcome = (kind, value)
        self._process.join(max(0.0, deadline - time.monotonic()))
        if self._process.exitcode is None:
            raise TimeoutError("child reported but has not exited in time")
        failure = self._failure()
        if failure is not None:
            raise failure
        return self._outcome[1]

    def __enter__(self) -> PausableChild:
        return self.start() if self._process.pid is None else self

    def __exit__(self, *exc_info: object) -> None:
        if self._process.pid is not None and self._process.exitcode is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.join(30)
        self._inbox.close()
