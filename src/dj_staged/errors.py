"""Error messages shared by the session and the lifecycles.

DataJoint 2.3.5's staged insert words some errors in a way that existing code
and users already know; those texts are kept verbatim here.
"""

from __future__ import annotations

from datajoint.errors import DataJointError

STORAGE_NOT_CONFIGURED = "Storage is not configured. Set stores.default and stores.<name> settings in datajoint.json."


def storage_not_configured(field: str, cause: Exception) -> DataJointError:
    """The 2.3.5 message, followed by which field asked and what DataJoint said."""
    return DataJointError(f"{STORAGE_NOT_CONFIGURED} (field '{field}': {cause})")


def missing_primary_key(missing: set[str]) -> DataJointError:
    """The 2.3.5 message for ``store()``/``open()`` before the whole key is set."""
    return DataJointError(
        f"Primary key values must be set in staged.rec before calling store() or open(). Missing: {missing}"
    )
