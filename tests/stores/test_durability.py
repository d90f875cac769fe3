"""Durable commits: on a local store a row commits only after the bytes it references are on disk.

``os.fsync`` is wrapped (it still syncs) to record what was synced and when,
relative to the ``writer.commit`` step; the same wrapper stands in for a disk
that fails to sync. Files are identified by inode, so a hash-addressed object
synced under its staging name and then hard-linked to its canonical name counts.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import datajoint as dj
import numpy as np
import pytest
import zarr
from support.stores import store_files
from support.tables import declare

import dj_staged
from dj_staged import steps
from dj_staged.durability import directory_identity

DEFINITION = """
k : int32
---
waveform : <npy@main>
raw : <object@main>
frames : <object@main>
content : <hash@main>
report : <attach@main>
payload : <blob@main>
placed : <filepath@main>
tree : <filepath@main>
"""


@pytest.fixture
def synced(monkeypatch):
    """The (device, inode) of every file or directory fsynced, in order."""
    seen: list[tuple[int, int]] = []
    real = os.fsync

    def fsync(descriptor: int) -> None:
        stat = os.fstat(descriptor)
        seen.append((stat.st_dev, stat.st_ino))
        real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def stage_everything(Table) -> None:
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = 1
        with staged.open("waveform", ".npy") as f:
            np.save(f, np.arange(100.0))
        with staged.open("raw", ".bin") as f:
            f.write(b"raw bytes" * 100)
        z = zarr.open(staged.store("frames", ".zarr"), mode="w", shape=(4, 8), chunks=(1, 8), dtype="int16")
        for i in range(4):
            z[i] = i
        with staged.open("content", ".bin") as f:
            f.write(os.urandom(10_000))
        with staged.open("report", ".txt") as f:  # the filename comes after: the content is framed at exit
            f.write(b"attached")
        staged.set_filename("report", "report.txt")
        with staged.open("payload", ".bin") as f:  # no size: the blob header is patched in place at exit
            f.write(b"blob bytes")
        with staged.open("placed", path="subject01/session001/data.bin") as f:  # placed into new folders
            f.write(b"placed bytes")
        tree = staged.store("tree", path="subject01/session001/tree")
        tree["a.bin"], tree["nested/b.bin"] = b"a", b"b"


def identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def test_every_file_and_directory_a_row_references_is_synced_before_its_insert(
    djstaged_schema, djstaged_local_store, synced, tmp_path
):
    Table = declare(djstaged_schema, "Durable", DEFINITION)
    at_commit: list[int] = []
    with steps.observe("writer.commit", lambda **context: at_commit.append(len(synced))):
        stage_everything(Table)
    before = set(synced[: at_commit[0]])
    root = Path(djstaged_local_store.spec["location"])
    files = [root / p for p in store_files(djstaged_local_store)]
    assert len(files) == 12  # npy, raw, zarr.json + 4 chunks, the hash, attach, blob objects, 3 placed files
    assert [f for f in files if identity(f) not in before] == []
    folders = {folder for f in files for folder in f.relative_to(root).parents if folder != Path(".")}
    assert [d for d in folders if identity(root / d) not in before] == []
    assert identity(root) in before
    with dj.config.override(download_path=str(tmp_path / "downloads")):
        fetched = Table.fetch1()
    assert fetched["payload"] == b"blob bytes" and fetched["raw"].read() == b"raw bytes" * 100


def test_turned_off_nothing_is_synced(djstaged_schema, djstaged_local_store, synced, monkeypatch):
    monkeypatch.setenv("DJ_STAGED_DURABLE", "0")
    Table = declare(djstaged_schema, "Scratch", DEFINITION)
    stage_everything(Table)
    assert synced == [] and len(Table()) == 1


def test_a_disk_that_fails_to_sync_fails_the_commit(djstaged_schema, djstaged_local_store, monkeypatch):
    """An fsync error means the bytes may not be on disk: nothing is inserted and nothing is left."""
    real = os.fsync
    broken = OSError(errno.EIO, "Input/output error")

    def fsync(descriptor: int) -> None:
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith(".zarr"):
            raise broken
        real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    Table = declare(djstaged_schema, "Failing", DEFINITION)
    with pytest.raises(OSError) as raised:
        stage_everything(Table)
    assert raised.value is broken
    assert len(Table()) == 0 and store_files(djstaged_local_store) == []


def test_a_batch_syncs_every_row_once_before_its_one_insert(djstaged_schema, djstaged_local_store, synced):
    """Rows are synced together at the commit; a row that unwound inside the batch leaves nothing to sync."""
    Table = declare(djstaged_schema, "Trials", "trial : int32\n---\nsignal : <npy@main>\ncontent : <hash@main>")
    at_commit: list[int] = []
    with steps.observe("writer.commit", lambda **context: at_commit.append(len(synced))):
        with dj_staged.staged_insert(Table) as batch:
            for trial in range(4):
                try:
                    with batch.row() as staged:
                        staged.rec["trial"] = trial
                        with staged.open("signal", ".npy") as f:
                            np.save(f, np.full(10, trial))
                        with staged.open("content", ".bin") as f:
                            f.write(os.urandom(1000))
                        if trial == 2:
                            raise RuntimeError("this trial is dropped")
                except RuntimeError:
                    pass
            assert synced == []  # nothing synced while the rows were written
    assert len(at_commit) == 1 and len(synced) == at_commit[0]
    root = Path(djstaged_local_store.spec["location"])
    files = [root / p for p in store_files(djstaged_local_store)]
    assert len(files) == 6 and {identity(f) for f in files} <= set(synced)
    assert len(synced) == len(set(synced))  # each file and directory once, however many rows share it
    assert sorted(row["trial"] for row in Table.to_dicts()) == [0, 1, 3]


def test_a_plan_of_many_entries_is_one_syncfs_per_filesystem(
    djstaged_schema, djstaged_local_store, synced, monkeypatch
):
    """A batch of many small rows syncs its filesystem once instead of an fsync per file and directory."""
    from dj_staged import durability

    calls: list[str] = []
    real = durability.syncfs
    monkeypatch.setattr(durability, "syncfs", lambda path: (calls.append(path), real(path))[1])
    Table = declare(djstaged_schema, "Many", "trial : int32\n---\nsignal : <npy@main>")
    at_commit: list[int] = []
    with steps.observe("writer.commit", lambda **context: at_commit.append(len(calls))):
        with dj_staged.staged_insert(Table) as batch:
            for trial in range(durability.MANY):
                with batch.row() as staged:
                    staged.rec["trial"] = trial
                    with staged.open("signal", ".npy") as f:
                        np.save(f, np.full(4, trial))
    assert at_commit == [1] and synced == []  # one syncfs before the insert, no fsync at all
    assert Path(calls[0]).is_relative_to(djstaged_local_store.spec["location"])
    assert len(Table()) == durability.MANY


def stage_signal(Table, key: int) -> None:
    with dj_staged.staged_insert1(Table) as staged:
        staged.rec["k"] = key
        with staged.open("signal", ".npy") as f:
            np.save(f, np.full(8, key))


def folders_synced_for(Table, key: int, root: Path, synced: list) -> set[Path]:
    """The store's folders fsynced while ``key``'s row was staged (relative to the store, ``.`` for its root)."""
    synced.clear()
    stage_signal(Table, key)
    folders = {p for p in root.rglob("*") if p.is_dir()} | {root}
    return {p.relative_to(root) for p in folders if identity(p) in synced}


def test_a_folder_already_synced_is_not_synced_again(djstaged_schema, djstaged_local_store, synced):
    """The second row under a table fsyncs its file, its own new folder and the table's folder (which gained
    it), not the folders above, whose entries the first row's commit made durable."""
    Table = declare(djstaged_schema, "Signals", "k : int32\n---\nsignal : <npy@main>")
    root = Path(djstaged_local_store.spec["location"])
    first = folders_synced_for(Table, 1, root, synced)
    second = folders_synced_for(Table, 2, root, synced)
    row_folder = next(p for p in second if p.name == "k=2")
    assert Path(".") in first and len(first) == len(row_folder.parents) + 1  # every folder, up to the root
    if directory_identity(str(root)) is None:  # a filesystem without inode generations: every folder, each time
        assert len(second) == len(row_folder.parents) + 1
    else:
        assert second == {row_folder, row_folder.parent}
    signal_file = next((root / row_folder).iterdir())
    assert identity(signal_file) in synced
    np.testing.assert_array_equal((Table & {"k": 2}).fetch1("signal").load(), np.full(8, 2))


def test_a_folder_removed_and_made_again_is_synced_again(djstaged_schema, djstaged_local_store, synced):
    """A schema folder deleted and made again (ext4 reuses its inode number at once) is a new entry in its
    parent: the next row syncs every folder from its own up to that parent, which gained it."""
    Table = declare(djstaged_schema, "Signals", "k : int32\n---\nsignal : <npy@main>")
    root = Path(djstaged_local_store.spec["location"])
    tracked = directory_identity(str(root)) is not None  # else every folder is synced every time
    folders_synced_for(Table, 1, root, synced)
    second = folders_synced_for(Table, 2, root, synced)
    assert (Path(".") in second) is not tracked
    Table.delete_quick()
    row_folder = next(p for p in second if p.name == "k=2")
    shutil.rmtree(root / next(p for p in row_folder.parents if p.name == djstaged_schema.database))
    again = folders_synced_for(Table, 3, root, synced)
    row_folder = next(p for p in again if p.name == "k=3")
    assert again == {row_folder, *row_folder.parents} - ({Path(".")} if tracked else set())
    np.testing.assert_array_equal(Table.fetch1("signal").load(), np.full(8, 3))
