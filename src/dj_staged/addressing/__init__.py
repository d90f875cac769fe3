"""The two addressing schemes a staged field can follow, as lifecycle mixins."""

from .schema import SchemaAddressedStaging

__all__ = ["SchemaAddressedStaging"]
