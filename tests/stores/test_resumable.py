"""The store layer's resumable writers (issue #27): what they report durable, and a prefix they refuse to resume.

A writer reports a checkpoint only once its bytes would survive the writer's death (locally: once fsynced);
a writer opened from a checkpoint first checks the store still holds that prefix, exactly, and raises
:class:`~dj_staged.errors.DurablePrefixLostError` saying why when it does not.
"""

from __future__ import annotations

import os
import threading

import datajoint as dj
import numpy as np
import pytest

from dj_staged.errors import DurablePrefixLostError
from dj_staged.stores import resolve_store
from dj_staged.stores.resumable import Checkpoint

UNIT = 64 << 10
S3_UNIT = 5 << 20


@pytest.fixture(autouse=True)
def small_units(monkeypatch):
    monkeypatch.setenv("DJ_STAGED_PART_SIZE", str(UNIT))


def write(store, path: str, data: bytes, unit: int) -> list[Checkpoint]:
    """Write ``data`` to ``path`` through a resumable writer, wait until its last whole unit is reported durable,
    and stop it (as an interrupted writer stops); the checkpoints it reported."""
    seen: list[Checkpoint] = []
    heard = threading.Condition()

    def on_checkpoint(checkpoint: Checkpoint) -> None:
        with heard:
            seen.append(checkpoint)
            heard.notify_all()

    writer = store.open_resumable(path, on_checkpoint=on_checkpoint)
    writer.write(data)
    boundary = len(data) - len(data) % unit
    with heard:
        assert heard.wait_for(lambda: bool(seen) and seen[-1].offset >= boundary, timeout=60)
    writer.suspend()
    return seen


def test_a_local_writer_reports_each_unit_it_synced_and_resumes_after_the_last(djstaged_local_store):
    store = resolve_store(djstaged_local_store.name, dj.config)
    data = np.random.default_rng(1).bytes(3 * UNIT + 100)
    seen = write(store, "_staging/s/t/f_1.bin", data, UNIT)
    assert all(c.offset % UNIT == 0 and not c.complete for c in seen)
    last = seen[-1]
    assert last.offset == 3 * UNIT
    writer = store.open_resumable("_staging/s/t/f_1.bin", on_checkpoint=seen.append, resume_from=last)
    assert writer.tell() == last.offset
    writer.write(data[last.offset :])
    writer.close()
    assert seen[-1].complete and seen[-1].offset == len(data)
    with open(store.full_path("_staging/s/t/f_1.bin"), "rb") as f:
        assert f.read() == data


def test_a_local_prefix_replaced_or_touched_is_refused(djstaged_local_store):
    store = resolve_store(djstaged_local_store.name, dj.config)
    data = np.random.default_rng(2).bytes(2 * UNIT)
    writer = store.open_resumable("_staging/s/t/f_2.bin", on_checkpoint=lambda checkpoint: None)
    writer.write(data)
    writer.close()  # the whole file, checkpointed complete
    seen: list[Checkpoint] = []
    writer = store.open_resumable("_staging/s/t/f_3.bin", on_checkpoint=seen.append)
    writer.write(data)
    writer.close()
    complete = seen[-1]
    full = store.full_path("_staging/s/t/f_3.bin")
    with open(full, "r+b") as f:
        f.seek(len(data) - 1)
        f.write(bytes([data[-1] ^ 1]))
    with pytest.raises(DurablePrefixLostError, match="changed since they were made durable"):
        store.open_resumable("_staging/s/t/f_3.bin", on_checkpoint=seen.append, resume_from=complete)
    os.replace(store.full_path("_staging/s/t/f_2.bin"), full)  # another file at the path now
    with pytest.raises(DurablePrefixLostError, match="another file"):
        store.open_resumable("_staging/s/t/f_3.bin", on_checkpoint=seen.append, resume_from=complete)
    os.remove(full)
    with pytest.raises(DurablePrefixLostError, match="gone"):
        store.open_resumable("_staging/s/t/f_3.bin", on_checkpoint=seen.append, resume_from=complete)


def test_an_s3_writer_reports_parts_in_order_and_refuses_an_aborted_upload(djstaged_s3_store):
    store = resolve_store(djstaged_s3_store.name, dj.config)
    assert store.part_size == S3_UNIT  # a smaller DJ_STAGED_PART_SIZE is raised to S3's smallest part
    data = np.random.default_rng(3).bytes(2 * S3_UNIT + 10)
    seen = write(store, "_staging/s/t/f_4.bin", data, S3_UNIT)
    assert all(c.offset % S3_UNIT == 0 and not c.complete for c in seen)  # parts 1..n, reported in order
    last = seen[-1]
    writer = store.open_resumable("_staging/s/t/f_4.bin", on_checkpoint=seen.append, resume_from=last)
    assert writer.tell() == 2 * S3_UNIT
    writer.write(data[2 * S3_UNIT :])
    writer.close()
    assert seen[-1].complete
    with store.open_read("_staging/s/t/f_4.bin") as f:
        assert f.read() == data
    seen = write(store, "_staging/s/t/f_5.bin", data, S3_UNIT)
    store.abandon_resumable("_staging/s/t/f_5.bin", seen[-1])
    with pytest.raises(DurablePrefixLostError, match="gone"):
        store.open_resumable("_staging/s/t/f_5.bin", on_checkpoint=seen.append, resume_from=seen[-1])
