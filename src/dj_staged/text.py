"""Text for people: sizes, durations, times and tables in the reports of ``dj-staged gc`` and ``dj-staged status``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(size: int | None) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 GiB`` (binary units); ``-`` when unknown."""
    if size is None:
        return "-"
    if abs(size) < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``0s``, ``90s``, ``30m``, ``24h``, ``2d`` or ``2d 6h``: two units at most, days only from two days on."""
    remaining = int(round(seconds))
    if remaining == 0:
        return "0s"
    parts = []
    units = (
        (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)) if remaining >= 172800 else (("h", 3600), ("m", 60), ("s", 1))
    )
    for unit, length in units:
        count, remaining = divmod(remaining, length)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2])


def utc(timestamp: float | None) -> str:
    """A POSIX time as ``2026-11-27 19:01:24Z``; ``-`` when unknown."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def iso(timestamp: float | None) -> str | None:
    """A POSIX time as ISO 8601 in UTC, for JSON; None when unknown."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 object``, ``2 objects``, ``1,000 files``."""
    return f"{number:,} {noun if number == 1 else (plural or noun + 's')}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> list[str]:
    """Lines of a plain-text table, columns as wide as their widest cell; columns in ``right`` right-aligned."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(padded).rstrip())
    return lines
