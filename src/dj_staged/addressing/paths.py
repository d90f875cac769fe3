"""Validation of everything a user contributes to a storage path.

Field names come from the table heading, but extensions, filenames and
primary-key values come from the caller; none of them may lead a write outside
the field's own location in the store.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from ..errors import InvalidPathError

MAX_EXTENSION_LENGTH = 32
MAX_FILENAME_LENGTH = 255

_EXTENSION = re.compile(r"^(\.[A-Za-z0-9][A-Za-z0-9_-]*)+$")


def check_extension(field: str, ext: str | None) -> str | None:
    """Return ``ext`` normalized to start with a dot (None when empty), or raise.

    Only ASCII letters, digits, ``_`` and ``-`` between dots are accepted, so
    no separator, parent reference, NUL or look-alike character can get in.
    """
    if ext is None or ext == "":
        return None
    if not isinstance(ext, str):
        raise InvalidPathError(
            f"Extension for field '{field}' must be a string such as '.zarr', got {type(ext).__name__}", field=field
        )
    normalized = ext if ext.startswith(".") else "." + ext
    if len(normalized) > MAX_EXTENSION_LENGTH or not _EXTENSION.fullmatch(normalized):
        raise InvalidPathError(
            f"Invalid extension {ext!r} for field '{field}': use a dot followed by ASCII letters, digits, "
            f"'_' or '-' (for example '.zarr' or '.tar.gz'), at most {MAX_EXTENSION_LENGTH} characters.",
            field=field,
        )
    return normalized


def check_relative_path(field: str, path: str) -> str:
    """Raise unless ``path`` is a plain relative path whose every segment is a real name."""
    segments = path.split("/")
    for segment in segments:
        if segment in ("", ".", "..") or "\\" in segment or "\x00" in segment:
            raise InvalidPathError(
                f"The storage path for field '{field}' would not stay inside the store ({path!r}): "
                "check the primary-key values and extension for separators, '..' or NUL characters.",
                field=field,
            )
    return path


def check_key(field: str, key: dict[str, Any]) -> None:
    """Raise before any query or write if a key value carries a NUL character (no store or database takes it)."""
    for name, value in key.items():
        if isinstance(value, str) and "\x00" in value:
            raise InvalidPathError(
                f"The storage path for field '{field}' would not stay inside the store: primary-key attribute "
                f"'{name}' contains a NUL character ({value!r}).",
                field=field,
            )


def check_filename(field: str, filename: str) -> str:
    """Raise unless ``filename`` is a single plain file name (used by attachments)."""
    if not isinstance(filename, str):
        raise InvalidPathError(
            f"Filename for field '{field}' must be a string, got {type(filename).__name__}", field=field
        )
    folded = unicodedata.normalize("NFKC", filename)
    if (
        filename in ("", ".", "..")
        or folded in (".", "..")
        or any(c in folded for c in "/\\\x00")
        or len(filename.encode("utf-8")) > MAX_FILENAME_LENGTH
    ):
        raise InvalidPathError(
            f"Invalid filename {filename!r} for field '{field}': give a plain file name such as 'report.pdf' "
            f"(not empty, not '.' or '..', no '/', '\\' or NUL, at most {MAX_FILENAME_LENGTH} bytes).",
            field=field,
        )
    return filename
