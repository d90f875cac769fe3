"""The parties of a race, each in its own thread, one of them held at a named protocol step.

Why: the writer–collector protocol is proven by interleaving, never by sleeping. A :class:`Party` runs one
side and keeps its result or error; a :class:`Pause` observes a step of :mod:`dj_staged.steps` and holds the
thread it was armed for there until the test lets it go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Pause:
    """An observer of a protocol step that pauses the thread it was armed for until released.

    ``with steps.observe("collector.list", pause):`` then start the party's
    thread; ``pause.wait()`` returns once that thread is paused at the step,
    ``pause.go()`` lets it continue.
    """

    def __init__(self, thread_name: str, timeout: float = 60.0) -> None:
        self.thread_name = thread_name
        self.timeout = timeout
        self.reached = threading.Event()
        self.released = threading.Event()
        self.context: dict = {}

    def __call__(self, step: str, **context: Any) -> None:
        if threading.current_thread().name != self.thread_name or self.reached.is_set():
            return
        self.context = {"step": step, **context}
        self.reached.set()
        if not self.released.wait(self.timeout):
            raise TimeoutError(f"{self.thread_name} was never released from {step}")

    def wait(self) -> None:
        if not self.reached.wait(self.timeout):
            raise TimeoutError(f"{self.thread_name} never reached its step")

    def go(self) -> None:
        self.released.set()


class Party(threading.Thread):
    """A thread that runs one party of a race and keeps its result or error for the test."""

    def __init__(self, name: str, target: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(name=name, daemon=True)
        self._call = (target, args, kwargs)
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        target, args, kwargs = self._call
        try:
            self.result = target(*args, **kwargs)
        except BaseException as error:
            self.error = error

    def outcome(self, timeout: float = 60.0) -> Any:
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"{self.name} did not finish")
        if self.error is not None:
            raise self.error
        return self.result


class Hold:
    """An observer of a protocol step that holds the first call whose context ``when`` accepts, in whichever
    thread it comes (a checkpoint is recorded by a store's own threads), until released.

    ``hold.wait()`` returns once a thread is held at the step, ``hold.go()`` lets it continue; the context
    it was held with is ``hold.context``.
    """

    def __init__(self, when: Callable[..., bool] = lambda **context: True, timeout: float = 120.0) -> None:
        self.when = when
        self.timeout = timeout
        self.reached = threading.Event()
        self.released = threading.Event()
        self.context: dict = {}
        self._lock = threading.Lock()

    def __call__(self, step: str, **context: Any) -> None:
        with self._lock:
            if self.reached.is_set() or not self.when(**context):
                return
            self.context = {"step": step, **context}
            self.reached.set()
        if not self.released.wait(self.timeout):
            raise TimeoutError(f"never released from {step}")

    def wait(self) -> None:
        if not self.reached.wait(self.timeout):
            raise TimeoutError("no thread reached the step")

    def go(self) -> None:
        self.released.set()
