"""Staged insert for DataJoint's built-in ``<filepath@store>``: a file or folder at a path you choose.

DataJoint's ``<filepath@>`` references a file that is already in the store;
writing it there first and inserting the row after leaves a file without a row,
or a row for a half-copied file, when something fails between the two. Staged,
the bytes go to dj-staged's staging section under the lease and are placed at
the path at exit, just before the row is inserted; on failure nothing is left at
the path. The path is checked as ``FilepathCodec.encode`` checks it (the store's
reserved sections, its ``filepath_prefix``) before the first byte, and the
column value is the codec's own for what is then at the path.

Example::

    with staged_insert1(Recording) as staged:
        staged.rec["recording_id"] = 1
        with staged.open("raw_data", path="subject01/session001/data.bin") as f:
            shutil.copyfileobj(source, f)

``store(field, path=...)`` writes a folder (a Zarr array) the same way. A path
that holds something is refused unless ``overwrite=True`` (and a path a row
references, always); see :mod:`dj_staged.addressing.placed`.
"""

from __future__ import annotations

from typing import Any

from .._datajoint import encode_as_insert
from ..addressing.placed import PlacedStaging
from ..errors import InvalidPathError
from ..protocol import StagedField


class FilepathStaging(PlacedStaging):
    """Adapter speaking the protocol for ``datajoint.builtin_codecs.filepath.FilepathCodec``."""

    def _check_target(self, field: StagedField, path: str) -> bool:
        try:
            encode_as_insert(field.table, field.name, path, field.primary_key)
        except FileNotFoundError:
            return False
        except ValueError as error:  # the codec's own refusal: a reserved section, outside filepath_prefix
            raise InvalidPathError(f"{field.label}: {error}", field=field.name) from error
        return True

    def _placed_value(self, field: StagedField, path: str) -> dict[str, Any]:
        value: dict[str, Any] = encode_as_insert(field.table, field.name, path, field.primary_key)
        return value
