"""Invariants as properties: the path validators (no database), and garbage collection as a state machine.

The state machine starts, finishes and crashes staged writes, inserts and
deletes rows, and collects with a grace period of 0, in any order Hypothesis
finds. After every step, nothing a row references or a live lease covers has
disappeared; at the end, once every write has ended, everything no row
references has been collected.
"""

from __future__ import annotations

import os
import posixpath

import datajoint as dj
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from support.stores import store_files

import dj_staged
import dj_staged.gc
from dj_staged.addressing.paths import check_extension, check_filename, check_key, check_relative_path
from dj_staged.errors import InvalidPathError

ROOT = "/store/location"

# --- validators ---------------------------------------------------------------------------------------


def stays_inside(relative: str) -> bool:
    """Whether ``relative`` joined to the store's root stays strictly inside it."""
    joined = posixpath.normpath(posixpath.join(ROOT, relative))
    return joined.startswith(ROOT + "/")


@given(st.text(max_size=40))
def test_an_accepted_extension_cannot_leave_the_field_location(ext):
    try:
        normalized = check_extension("f", ext)
    except InvalidPathError as error:
        assert error.field == "f" and isinstance(error, ValueError)
        return
    if normalized is None:
        assert ext == ""
        return
    assert normalized.startswith(".") and normalized.isascii()
    assert not any(c in normalized for c in "/\\\x00") and ".." not in normalized
    assert stays_inside(f"_schema/s/t/k=1/f_token{normalized}")


@given(st.lists(st.text(max_size=12), min_size=1, max_size=6))
def test_an_accepted_relative_path_stays_inside_the_store(segments):
    path = "/".join(segments)
    try:
        check_relative_path("f", path)
    except InvalidPathError:
        return
    assert stays_inside(path) and "\x00" not in path and "\\" not in path


@given(st.text(max_size=300))
def test_an_accepted_filename_is_one_plain_name(name):
    try:
        check_filename("report", name)
    except InvalidPathError:
        return
    assert name and name not in (".", "..") and not any(c in name for c in "/\\\x00")
    assert posixpath.basename(name) == name and stays_inside(f"downloads/{name}")


@given(st.dictionaries(st.sampled_from(["a", "b"]), st.one_of(st.integers(), st.text(max_size=8)), min_size=1))
def test_a_key_with_a_nul_character_is_refused_before_anything_else(key):
    has_nul = any(isinstance(v, str) and "\x00" in v for v in key.values())
    if has_nul:
        with pytest.raises(InvalidPathError):
            check_key("f", key)
    else:
        check_key("f", key)


# --- garbage collection as a state machine ---------------------------------------------------------------


def content(seed: int) -> bytes:
    return f"content {seed} ".encode() * 50


class Collection(RuleBasedStateMachine):
    """Writers, deleters and a grace-0 collector on one local store, in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, int] = {}  # key -> content seed, as committed
        self.inflight: list[tuple[int, int, object, object]] = []  # (key, seed, context manager, session)

    @initialize()
    def table(self) -> None:
        self.Table = Collection.Table
        self.schema = Collection.schema
        self.store = Collection.store
        self.Table.delete_quick()

    @rule(key=st.integers(0, 5), seed=st.integers(0, 3), codec=st.sampled_from(["raw", "digest"]))
    @precondition(lambda self: len(self.inflight) < 3)
    def start_write(self, key: int, seed: int, codec: str) -> None:
        manager = dj_staged.staged_insert1(self.Table)
        staged = manager.__enter__()
        staged.rec["k"] = key
        try:
            with staged.open(codec, ".bin") as f:
                f.write(content(seed))
        except dj.errors.DuplicateError:
            manager.__exit__(dj.errors.DuplicateError, None, None)
            return
        self.inflight.append((key, seed, manager, staged))

    @rule(data=st.data())
    @precondition(lambda self: self.inflight)
    def finish_write(self, data) -> None:
        key, seed, manager, _staged = self.inflight.pop(data.draw(st.integers(0, len(self.inflight) - 1)))
        try:
            manager.__exit__(None, None, None)
        except dj.errors.DuplicateError:
            return  # another write took the key first
        self.rows[key] = seed

    @rule(data=st.data())
    @precondition(lambda self: self.inflight)
    def crash_write(self, data) -> None:
        _key, _seed, manager, _staged = self.inflight.pop(data.draw(st.integers(0, len(self.inflight) - 1)))
        manager.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)  # abandoned: nothing removed in-process

    @rule(key=st.integers(0, 5), seed=st.integers(0, 3))
    def insert_row(self, key: int, seed: int) -> None:
        if key in self.rows:
            return
        self.Table.insert1({"k": key, "digest": content(seed)})
        self.rows[key] = seed

    @rule(key=st.integers(0, 5))
    def delete_row(self, key: int) -> None:
        (self.Table & {"k": key}).delete_quick()
        self.rows.pop(key, None)

    @rule()
    def collect(self) -> None:
        report = dj_staged.gc.collect(self.schema, store="main", grace=0, dry_run=False)
        assert report.errors == []

    @invariant()
    def nothing_referenced_or_leased_disappeared(self) -> None:
        if not hasattr(self, "Table"):
            return
        for key, seed in self.rows.items():
            row = (self.Table & {"k": key}).fetch1()
            value = row["raw"].read() if row["raw"] is not None else row["digest"]
            assert value == content(seed), f"row {key} lost its content"
        root = self.store.spec["location"]
        for _key, _seed, _manager, staged in self.inflight:
            for name in staged.staged_fields:
                state = staged.field(name).state
                path = getattr(state, "path", None) or state.staging_path
                assert os.path.exists(os.path.join(root, path)), f"in-flight {path} was collected"

    def teardown(self) -> None:
        while self.inflight:
            _key, _seed, manager, _staged = self.inflight.pop()
            manager.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
        if not hasattr(self, "Table"):
            return
        dj_staged.gc.collect(self.schema, store="main", grace=0, dry_run=False)
        referenced = {
            value.path if hasattr(value, "path") else None
            for row in self.Table.to_dicts()
            for value in (row["raw"],)
            if value is not None
        }
        left = store_files(self.store, leases=True)
        digests = self.Table.connection.query(f"SELECT digest FROM {self.Table.full_table_name}").fetchall()
        referenced |= {value["path"] for (value,) in digests if value is not None}
        unreferenced = [p for p in left if not any(p == r or p.startswith(f"{r}/") for r in referenced if r)]
        assert unreferenced == [], f"not collected although no row references them: {unreferenced}"


def test_collection_never_loses_referenced_or_leased_objects(djstaged_schema, djstaged_local_store):
    Collection.Table = djstaged_schema(
        type(
            "Collected",
            (dj.Manual,),
            {"definition": "k : int32\n---\nraw = null : <object@main>\ndigest = null : <hash@main>"},
        )
    )
    Collection.schema = djstaged_schema
    Collection.store = djstaged_local_store
    run_state_machine_as_test(
        Collection,
        settings=settings(
            max_examples=12, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
