"""The two addressing schemes a staged field can follow, as lifecycle mixins."""

from .hashed import HashAddressedStaging
from .schema import SchemaAddressedStaging

__all__ = ["HashAddressedStaging", "SchemaAddressedStaging"]
