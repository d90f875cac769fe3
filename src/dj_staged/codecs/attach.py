"""Staged insert for DataJoint's built-in ``<attach@>``: a file with its name.

The stored bytes are what ``AttachCodec.encode`` produces for a file of that
name and content, ``filename + b"\\0" + contents``, so fetch downloads a file
with that name and content. Set the filename before ``open()`` (the cheaper
order: the name is written first and the content hashed as it streams); set
after ``open()``, the content is framed into a second staging object at exit,
costing one more read and write of it.

Example::

    with staged_insert1(Documents) as staged:
        staged.rec["doc_id"] = 1
        staged.set_filename("report", "final_report.pdf")
        with staged.open("report", ".pdf") as f:
            f.write(render_pdf())
"""

from __future__ import annotations

from ..addressing.hashed import HashAddressedStaging
from ..errors import InvalidPathError
from ..protocol import StagedField


class AttachStaging(HashAddressedStaging):
    """Adapter speaking the protocol for ``datajoint.builtin_codecs.attach.AttachCodec``."""

    accepts_filename = True

    def _stored_prefix(self, field: StagedField, content_size: int | None) -> bytes | None:
        if field.filename is None:
            if content_size is None:
                return None
            raise InvalidPathError(
                f"{field.label} has no filename: call staged.set_filename('{field.name}', 'name.ext') "
                "inside the block (before open() is cheapest)",
                field=field.name,
            )
        return field.filename.encode("utf-8") + b"\x00"
