"""Wall time and peak resident memory of a block, sampled from the OS while it runs."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

_PAGE = os.sysconf("SC_PAGE_SIZE")


def current_rss() -> int:
    """Resident set size of this process in bytes (``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


@dataclass
class Measurement:
    """What :func:`measured` saw: seconds, RSS before, and the peak RSS during the block."""

    seconds: float = 0.0
    rss_before: int = 0
    rss_peak: int = 0

    @property
    def peak_above_before(self) -> int:
        """Bytes of peak RSS above the RSS before the block."""
        return max(0, self.rss_peak - self.rss_before)


@contextlib.contextmanager
def measured(interval: float = 0.005) -> Iterator[Measurement]:
    """Time the block and sample RSS every ``interval`` seconds in a background thread."""
    result = Measurement(rss_before=current_rss())
    result.rss_peak = result.rss_before
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            result.rss_peak = max(result.rss_peak, current_rss())
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        result.rss_peak = max(result.rss_peak, current_rss())
