"""The store layer: what dj-staged asks of a store, one implementation per protocol, resolved in one place.

- :mod:`~dj_staged.stores.base`: :class:`StagedStore` (capabilities and operations), :class:`StoreObject`;
- :mod:`~dj_staged.stores.local`, :mod:`~dj_staged.stores.s3`, :mod:`~dj_staged.stores.gcs`,
  :mod:`~dj_staged.stores.azure`: one store per protocol;
- :mod:`~dj_staged.stores.registry`: which class serves a configured store (:func:`resolve_store`);
- :mod:`~dj_staged.stores.sealed`, :mod:`~dj_staged.stores.journal`: the filesystem behind a ``store()``
  handle, which refuses writes once its block ends and, on a local store, journals what it wrote.

Nothing outside this package asks which protocol a store speaks.
"""

from .base import IncompleteUpload, ObjectIdentity, StagedStore, StoredFile, StoreObject
from .registry import resolve_store, store_classes

__all__ = [
    "IncompleteUpload",
    "ObjectIdentity",
    "StagedStore",
    "StoreObject",
    "StoredFile",
    "resolve_store",
    "store_classes",
]
