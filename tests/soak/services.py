"""A soak run alone: its own PostgreSQL, the emulators its stores want, and the stores' configuration."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support.s3 import s3_client

from soak.config import Services


@contextlib.contextmanager
def own_services(stores: list[str], workdir: Path) -> Iterator[Services]:
    """An embedded PostgreSQL, the emulators the stores want (moto S3, fake-gcs-server, Azurite) and a local store
    in ``workdir``."""
    from dj_staged.testing import services

    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(services.embedded_postgres(workdir))
        s3 = stack.enter_context(services.moto_s3_server()) if "s3" in stores else None
        gcs = stack.enter_context(services.fake_gcs_server(workdir)) if "gcs" in stores else None
        if gcs is not None:
            stack.enter_context(services.gcs_emulator_environment(gcs))  # the writers inherit it
        azure = stack.enter_context(services.azurite_server(workdir)) if "azure" in stores else None
        specs = store_specs(stores, workdir, s3, gcs, azure)
        yield Services(db=dataclasses.asdict(pg), stores=specs, workdir=str(workdir))


def store_specs(
    stores: list[str] | tuple[str, ...], workdir: Path, s3: Any = None, gcs: Any = None, azure: Any = None
) -> dict[str, Any]:
    """``dj.config.stores`` for the soak: ``local`` in ``workdir``, the others in a new bucket or container of
    their emulator."""
    from dj_staged.testing import services

    specs: dict[str, Any] = {"default": stores[0]}
    for name in stores:
        if name == "local":
            location = workdir / "local-store"
            location.mkdir(parents=True, exist_ok=True)
            specs[name] = {"protocol": "file", "location": str(location)}
        elif name == "s3":
            spec = services.s3_store_spec(s3, f"soak-{uuid.uuid4().hex[:12]}")
            s3_client(spec).create_bucket(Bucket=spec["bucket"])
            specs[name] = spec
        elif name == "gcs":
            bucket = f"soak-{uuid.uuid4().hex[:12]}"
            services.create_gcs_bucket(gcs, bucket)
            specs[name] = services.gcs_store_spec(gcs, bucket)
        elif name == "azure":
            container = f"soak-{uuid.uuid4().hex[:12]}"
            services.create_azure_container(azure, container)
            specs[name] = services.azure_store_spec(azure, container)
        else:
            raise ValueError(f"unknown store {name!r}: local, s3, gcs or azure")
    return specs
