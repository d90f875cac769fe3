"""``<lines@>``: a list of text lines stored as one UTF-8 file, with staged-insert support.

Ordinary insert takes a list of strings; staged insert writes the lines through
``staged.open(field, ".txt")`` as they are produced, so a log of any length
never has to be held in memory::

    with dj_staged.staged_insert1(Session) as staged:
        staged.rec["session_id"] = 1
        with staged.open("log", ".txt") as f:
            for event in instrument.events():
                f.write(event.encode() + b"\\n")
"""

from __future__ import annotations

from typing import Any

from datajoint.builtin_codecs.schema import SchemaCodec
from datajoint.errors import DataJointError

import dj_staged

CHUNK = 1 << 20


class LinesCodec(dj_staged.SchemaAddressedStaging, SchemaCodec):
    """Column value ``{path, store, size, lines}``; fetch returns the list of lines."""

    name = "lines"
    staged_modes = ("open",)  # one file: staged.open(), not staged.store()

    def validate(self, value: Any) -> None:
        if not isinstance(value, list) or not all(isinstance(line, str) and "\n" not in line for line in value):
            raise DataJointError("<lines> takes a list of strings without newlines")

    def encode(self, value: list[str], *, key=None, context=None, store_name=None) -> dict:
        self.validate(value)
        schema, table, field, primary_key = self._extract_context(key, context)
        config = self._codec_config(key, context)
        path, _ = self._build_path(schema, table, field, primary_key, ext=".txt", store_name=store_name, config=config)
        data = "".join(line + "\n" for line in value).encode("utf-8")
        self._get_backend(store_name, config=config).put_buffer(data, path)
        return {"path": path, "store": store_name, "size": len(data), "lines": len(value)}

    def decode(self, stored: dict, *, key=None, context=None) -> list[str]:
        backend = self._get_backend(stored["store"], config=self._codec_config(key, context))
        return backend.get_buffer(stored["path"]).decode("utf-8").splitlines()

    def _enrich_staged_metadata(self, base: dict, field: dj_staged.StagedField) -> dict:
        """What ``encode`` returns, computed from the written file (read in chunks, never whole)."""
        lines = 0
        with field.backend.open(base["path"], "rb") as f:
            while chunk := f.read(CHUNK):
                lines += chunk.count(b"\n")
        return {"path": base["path"], "store": base["store"], "size": base["size"], "lines": lines}
