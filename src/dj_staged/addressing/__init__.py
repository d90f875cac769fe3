"""The lifecycles a staged field can follow, as mixins: schema-addressed and hash-addressed (DataJoint builds the
path), and placed (the writer chooses it, ``<filepath@>``)."""

from .hashed import HashAddressedStaging
from .placed import PlacedStaging
from .schema import SchemaAddressedStaging

__all__ = ["HashAddressedStaging", "PlacedStaging", "SchemaAddressedStaging"]
