"""Which :class:`~dj_staged.stores.base.StagedStore` serves a configured store: one place, one store per spec.

The built-in protocols are DataJoint's four: ``file``, ``s3``, ``gcs`` and
``azure``. A package that adds a DataJoint storage protocol (entry point group
``datajoint.storage``) can give it staged support by registering a
``StagedStore`` subclass under the same name in the entry point group
``dj_staged.stores``. A store whose protocol has neither is refused with
:class:`~dj_staged.errors.UnsupportedBackendError` before anything is written.

Resolving a store builds DataJoint's backend (and its filesystem), which costs
more than a small row's whole write; a store is therefore made once per store
specification and shared by later blocks. A changed specification (another
location, other credentials) is another store.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points

from .._datajoint import Config, store_backend
from ..errors import DataJointError, UnsupportedBackendError, storage_not_configured
from .azure import AzureStore
from .base import StagedStore
from .gcs import GCSStore
from .local import LocalStore
from .s3 import S3Store

ENTRY_POINT_GROUP = "dj_staged.stores"
BUILT_IN: dict[str, type[StagedStore]] = {cls.protocol: cls for cls in (LocalStore, S3Store, GCSStore, AzureStore)}
KEPT = 32  # stores kept at once; more specifications than this in one process start the cache afresh

_stores: dict[tuple[str, str], StagedStore] = {}
_plugins: dict[str, type[StagedStore]] | None = None
_lock = threading.Lock()


def store_classes() -> dict[str, type[StagedStore]]:
    """Protocol → store class: the built-in ones and those registered in ``dj_staged.stores``."""
    global _plugins
    if _plugins is None:
        _plugins = {point.name: point.load() for point in entry_points(group=ENTRY_POINT_GROUP)}
    return {**_plugins, **BUILT_IN}


def resolve_store(requested: str | None, config: Config, *, field: str | None = None) -> StagedStore:
    """The store ``requested`` names (None: ``stores.default``) in DataJoint's ``config``.

    Raises :class:`~dj_staged.errors.StagedInsertError` naming the configured
    stores when it is not configured or cannot be used, and
    :class:`~dj_staged.errors.UnsupportedBackendError` when its protocol has no
    staged support.
    """
    try:
        spec = config.get_store_spec(requested)
    except DataJointError as error:
        raise storage_not_configured(field, requested, config.stores, error) from error
    name = requested if requested is not None else str(config.stores["default"])
    key = (name, repr(sorted(spec.items())))
    with _lock:
        store = _stores.get(key)
    if store is not None:
        return store
    protocol = str(spec.get("protocol"))
    cls = store_classes().get(protocol)
    if cls is None:
        supported = ", ".join(sorted(store_classes()))
        raise UnsupportedBackendError(
            f"Store '{name}' uses the protocol {protocol!r}, which dj-staged does not support; supported: "
            f"{supported}. Use a store of one of those for staged inserts (ordinary insert1 is unaffected)."
        )
    try:
        backend = store_backend(requested, config)
    except (DataJointError, OSError) as error:
        raise storage_not_configured(field, requested, config.stores, error) from error
    store = cls(name, spec, backend)
    with _lock:
        if len(_stores) >= KEPT:
            _stores.clear()
        _stores[key] = store
    return store
