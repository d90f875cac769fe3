"""The conformance kit: the tests a codec claiming staged-insert support must pass.

A codec author subclasses one suite in a test module of their own::

    from dj_staged.testing import SchemaAddressedConformance


    class TestLinesCodec(SchemaAddressedConformance):
        codec = "<lines@{store}>"

        def sample(self, tmp_path):
            return ["first line", "second line"]

        def write(self, staged, field, sample):
            with staged.open(field, ".txt") as f:
                for line in sample:
                    f.write(line.encode() + b"\\n")

pytest collects the subclass (its name starts with ``Test``) and runs every
test on a local store and on an S3 store (moto on 127.0.0.1) against a real
PostgreSQL; the fixtures come with the ``dj-staged`` pytest plugin. Each test
declares its own table ``subject_id, session_id -> data : <codec>`` in a fresh
schema and compares a staged row with an ordinary ``insert1`` row of the same
content. The suites: :class:`SchemaAddressedConformance`,
:class:`HashAddressedConformance`, :class:`PlacedConformance` (a path the
writer chooses) and :class:`NonParticipatingCodecConformance`.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import datajoint as dj
import pytest

from .. import HashAddressedStaging, __version__, enable, is_enabled, participant_for, staged_insert1, steps
from ..errors import MissingPrimaryKeyError, NotParticipatingError, PathTakenError
from ..protocol import PROTOCOL_METHODS, PROTOCOL_VERSION, speaker_of
from ..session.enable import disable
from .fixtures import StoreInfo

if TYPE_CHECKING:
    from .._datajoint import Codec, Schema, Table, Value
    from ..addressing.hashed import HashAddressedState
    from ..session import StagedSession

from .inspection import (
    assert_equivalent,
    column_value,
    content_hash,
    hash_path,
    object_identity,
    put_object,
    read_object,
    schema_path_extension,
    store_files,
)

FIELD = "data"
STAGED = {"subject_id": 1, "session_id": 1}
ORDINARY = {"subject_id": 2, "session_id": 1}
OTHER = {"subject_id": 3, "session_id": 1}

DEFINITION = """
subject_id : int32
session_id : int32
---
{field} : {codec}
"""


class Abort(Exception):
    """Raised inside a staged block by the cleanup test."""


#: The methods of protocol version 2, as a codec or an adapter defines them.
PROTOCOL_SHAPE = (
    "staged_handle(self, field, *, mode, file_mode='wb'), finalize_staged(self, field), cleanup_staged(self, field)"
)


def _parameters(method: Callable[..., object]) -> list[inspect.Parameter] | None:
    """The parameters of a bound method, or None where they cannot be read."""
    try:
        return list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return None


def _required_positional(method: Callable[..., object]) -> int | None:
    """How many positional arguments a bound method requires, or None where that cannot be told (``*args``)."""
    parameters = _parameters(method)
    if parameters is None or any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in parameters if p.kind in positional and p.default is p.empty)


def protocol_shape_problem(codec: Codec, participant: object) -> str | None:
    """Why ``participant``'s methods do not have the shape of this protocol version, or None if they do.

    Each method of :data:`~dj_staged.protocol.PROTOCOL_VERSION` 2 takes one
    positional argument, the :class:`~dj_staged.StagedField`; an adapter written
    for version 1 (before dj-staged 0.1.0) takes the session, the field's name
    and, for ``staged_handle``, the extension, and would fail with a
    ``TypeError`` about missing positional arguments at its first call.
    """
    methods: dict[str, Any] = {name: getattr(participant, name, None) for name in PROTOCOL_METHODS}
    wrong = {name: method for name, method in methods.items() if _required_positional(method) not in (None, 1)}
    if not wrong:
        return None
    shapes = ", ".join(f"{name}{inspect.signature(method)}" for name, method in wrong.items())
    handle = _parameters(methods["staged_handle"]) or []
    old = bool(handle) and handle[0].name == "session"
    version = "version 1 (dj-staged before 0.1.0)" if old else f"no version of dj-staged {__version__}"
    owner = type(participant)
    return (
        f"<{getattr(codec, 'name', '?')}> is served by {owner.__module__}.{owner.__qualname__}, whose staged-insert "
        f"methods have the shape of protocol {version}: {shapes}. dj-staged {__version__} speaks protocol version "
        f"{PROTOCOL_VERSION} (dj_staged.PROTOCOL_VERSION), where each method takes one dj_staged.StagedField: "
        f"{PROTOCOL_SHAPE}. Change the signatures, and read what the session, the field's name and the extension "
        "gave from the field: field.name, field.ext, field.primary_key, field.table, field.store_name, field.spec, "
        "field.backend; keep the field's state in field.state, and lease every path with field.lease(path) before "
        "writing it. CHANGELOG.md (0.1.0) shows the migration."
    )


def declare_table(schema: Schema, codec: str, store: StoreInfo) -> Table:
    """Declare ``Conformance(subject_id, session_id -> data : codec)`` in ``schema``; return an instance."""
    definition = DEFINITION.format(field=FIELD, codec=codec.format(store=store.name))
    return schema(type("Conformance", (dj.Manual,), {"definition": definition}))()


class _Suite:
    """Parametrizes every test of a suite over the suite's ``stores``."""

    #: Which stores every test runs on, of ``"local"``, ``"s3"``, ``"gcs"`` (fake-gcs-server) and ``"azure"`` (Azurite).
    stores: tuple[str, ...] = ("local", "s3")

    #: The field's type, with ``{store}`` where the store name goes, e.g. ``"<npy@{store}>"``.
    codec: str = ""

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "djstaged_conformance_store" in metafunc.fixturenames:
            metafunc.parametrize("djstaged_conformance_store", self.stores, indirect=True)

    @pytest.fixture
    def table(self, djstaged_schema: Schema, djstaged_conformance_store: StoreInfo) -> Table:
        """The test's table, on the store being tested."""
        return declare_table(djstaged_schema, self.codec, djstaged_conformance_store)


class StagedCodecConformance(_Suite):
    """The tests every participating codec passes; use one of the two addressing suites below."""

    addressing: str = ""

    def sample(self, tmp_path: Path) -> Value:
        """A value for ordinary ``insert1`` (may create files under ``tmp_path``, e.g. for ``<attach@>``)."""
        raise NotImplementedError

    def write(self, staged: StagedSession, field: str, sample: Value) -> None:
        """Write the content of ``sample`` into ``field`` through ``staged.store()``/``staged.open()``.

        Close what you open: the kit looks at the store before the block ends.
        """
        raise NotImplementedError

    def normalize(self, fetched: Value) -> Value:
        """Turn a fetched value into something comparable (e.g. ``ref.load()``); called right after each fetch."""
        return fetched

    def insert_ordinary(self, table: Table, key: dict[str, Any], tmp_path: Path) -> None:
        """Insert the sample at ``key`` with ordinary ``insert1``."""
        table.insert1({**key, FIELD: self.sample(tmp_path)})

    def insert_staged(self, table: Table, key: dict[str, Any], tmp_path: Path) -> StagedSession:
        """Insert the same content at ``key`` through a staged insert; return the session."""
        staged: StagedSession  # what the block gives (the package loads staged_insert1 lazily: untyped there)
        with staged_insert1(table) as staged:
            staged.rec.update(key)
            self.write(staged, FIELD, self.sample(tmp_path))
        return staged

    def fetch(self, table: Table, key: dict[str, Any], tmp_path: Path) -> tuple[type, Value]:
        """The fetched value's type and its normalized form (downloads go under ``tmp_path``)."""
        with dj.config.override(download_path=str(tmp_path / "downloads")):
            value = (table & key).fetch1(FIELD)
            return type(value), self.normalize(value)

    def assert_fetched_as_ordinary(self, table: Table, tmp_path: Path) -> None:
        """Insert the ordinary row, then assert the staged row fetches the same value it does."""
        self.insert_ordinary(table, ORDINARY, tmp_path)
        (_, ours), (_, theirs) = self.fetch(table, STAGED, tmp_path), self.fetch(table, ORDINARY, tmp_path)
        assert_equivalent(ours, theirs, f"fetched {FIELD}")

    def check_protocol(self, table: Table) -> None:
        """Fail, with one message that says what to change, if the field's participant has another protocol's shape."""
        codec = table.heading[FIELD].codec
        participant = participant_for(codec)
        problem = protocol_shape_problem(codec, speaker_of(participant) if participant is not None else None)
        if problem is not None:
            pytest.fail(problem, pytrace=False)

    def check_path(self, table: Table, key: dict[str, Any], column: dict[str, Any], store: StoreInfo) -> None:
        """Assert the column's path is the canonical one for this addressing scheme."""
        raise NotImplementedError

    def check_same_column(self, table: Table, ours: dict[str, Any], theirs: dict[str, Any], store: StoreInfo) -> None:
        """Assert a staged column value equals ``insert1``'s for the same content."""
        raise NotImplementedError

    def test_codec_admitted_by_staged_insert_gate(self, table: Table, tmp_path: Path) -> None:
        self.check_protocol(table)
        codec = table.heading[FIELD].codec
        assert participant_for(codec) is not None, f"<{codec.name}> does not implement the staged-insert protocol"
        was_enabled = is_enabled()
        enable()
        try:
            with table.staged_insert1 as staged:
                staged.rec.update(STAGED)
                self.write(staged, FIELD, self.sample(tmp_path))
        finally:
            if not was_enabled:
                disable()
        assert len(table & STAGED) == 1

    def test_staged_write_lands_at_canonical_path(
        self, table: Table, djstaged_conformance_store: StoreInfo, tmp_path: Path
    ) -> None:
        self.check_protocol(table)
        self.insert_staged(table, STAGED, tmp_path)
        column = column_value(table, STAGED, FIELD)
        path = column["path"]
        files = store_files(djstaged_conformance_store.name)
        assert files, "the staged insert left nothing in the store"
        outside = [f for f in files if f != path and not f.startswith(path + "/")]
        assert outside == [], f"objects outside the column's path {path!r}: {outside}"
        self.check_path(table, STAGED, column, djstaged_conformance_store)

    def test_staged_insert_metadata_matches_encode(
        self, table: Table, djstaged_conformance_store: StoreInfo, tmp_path: Path
    ) -> None:
        self.check_protocol(table)
        self.insert_staged(table, STAGED, tmp_path)  # first, so a hash-addressed object is moved, not deduplicated
        self.insert_ordinary(table, ORDINARY, tmp_path)
        ours, theirs = column_value(table, STAGED, FIELD), column_value(table, ORDINARY, FIELD)
        assert isinstance(ours, dict) and isinstance(theirs, dict), "column values must be JSON objects"
        assert sorted(ours) == sorted(theirs), "staged and insert1 column values have different keys"
        for name in ours:
            assert type(ours[name]) is type(theirs[name]), f"{name!r}: {ours[name]!r} vs insert1's {theirs[name]!r}"
        self.check_same_column(table, ours, theirs, djstaged_conformance_store)

    def test_staged_insert_fetch_roundtrip(self, table: Table, tmp_path: Path) -> None:
        self.check_protocol(table)
        self.insert_staged(table, STAGED, tmp_path)
        self.insert_ordinary(table, ORDINARY, tmp_path)
        ours_type, ours = self.fetch(table, STAGED, tmp_path)
        theirs_type, theirs = self.fetch(table, ORDINARY, tmp_path)
        assert ours_type is theirs_type, f"fetch returned {ours_type.__name__}, insert1's row {theirs_type.__name__}"
        assert_equivalent(ours, theirs, f"fetched {FIELD}")

    def test_staged_cleanup_on_exception(
        self, table: Table, djstaged_conformance_store: StoreInfo, tmp_path: Path
    ) -> None:
        self.check_protocol(table)
        self.insert_ordinary(table, ORDINARY, tmp_path)  # an existing row: its objects must survive the unwinding
        before = store_files(djstaged_conformance_store.name)
        with pytest.raises(Abort):
            with staged_insert1(table) as staged:
                staged.rec.update(STAGED)
                self.write(staged, FIELD, self.sample(tmp_path))
                during = store_files(djstaged_conformance_store.name)
                raise Abort
        assert set(during) - set(before), "write() put nothing in the store, so cleanup was not exercised"
        assert store_files(djstaged_conformance_store.name) == before, (
            "the unwinding left objects behind or removed some"
        )
        assert len(table & STAGED) == 0 and len(table) == 1

    def test_staged_write_is_leased_while_it_writes(
        self, table: Table, djstaged_conformance_store: StoreInfo, tmp_path: Path
    ) -> None:
        """A collection with no grace period, its clock days ahead, runs while the block is open: nothing is lost."""
        self.check_protocol(table)
        import dj_staged.gc

        schema = dj.Schema(table.database, connection=table.connection, create_schema=False, create_tables=False)
        with staged_insert1(table) as staged:
            staged.rec.update(STAGED)
            self.write(staged, FIELD, self.sample(tmp_path))
            written = store_files(djstaged_conformance_store.name)
            assert written, "write() put nothing in the store"
            report = dj_staged.gc.collect(
                schema, store=djstaged_conformance_store.name, grace=0, dry_run=False, now=time.time() + 30 * 86400
            )
            assert report.deleted == 0, f"the collector took what the codec wrote without a lease: {report.paths}"
            assert store_files(djstaged_conformance_store.name) == written
        self.assert_fetched_as_ordinary(table, tmp_path)

    def test_staged_primary_key_required(
        self, table: Table, djstaged_conformance_store: StoreInfo, tmp_path: Path
    ) -> None:
        self.check_protocol(table)
        with staged_insert1(table) as staged:
            for partial in ({}, {"subject_id": 1}):
                staged.rec.clear()
                staged.rec.update(partial)
                for ask in (staged.store, staged.open):
                    with pytest.raises(MissingPrimaryKeyError, match="session_id"):
                        ask(FIELD)
            assert store_files(djstaged_conformance_store.name) == []
            staged.rec.update(STAGED)
            self.write(staged, FIELD, self.sample(tmp_path))
        assert len(table & STAGED) == 1


class SchemaAddressedConformance(StagedCodecConformance):
    """Suite for codecs whose objects live at a path derived from the row (``<object@>``, ``<npy@>``, ...)."""

    addressing = "schema"

    #: Column keys allowed to differ between a staged row and an ``insert1`` row, besides the path's token.
    volatile: tuple[str, ...] = ("timestamp",)

    def check_path(self, table: Table, key: dict[str, Any], column: dict[str, Any], store: StoreInfo) -> None:
        schema_path_extension(table, FIELD, key, column["path"], store.name)

    def check_same_column(self, table: Table, ours: dict[str, Any], theirs: dict[str, Any], store: StoreInfo) -> None:
        ours_ext = schema_path_extension(table, FIELD, STAGED, ours["path"], store.name)
        theirs_ext = schema_path_extension(table, FIELD, ORDINARY, theirs["path"], store.name)
        assert ours_ext == theirs_ext, f"staged extension {ours_ext!r}, insert1's {theirs_ext!r}"
        skip = {"path", *self.volatile}
        same = {k: v for k, v in ours.items() if k not in skip}
        assert same == {k: v for k, v in theirs.items() if k not in skip}, "staged column value (left) != insert1's"


class HashAddressedConformance(StagedCodecConformance):
    """Suite for codecs whose stored bytes go through ``<hash@>`` (``<blob@>``, ``<attach@>``, ``<hash@>``, ...)."""

    addressing = "hash"

    def check_path(self, table: Table, key: dict[str, Any], column: dict[str, Any], store: StoreInfo) -> None:
        assert column["path"] == hash_path(table, column["hash"], store.name), "not DataJoint's canonical hash path"
        stored = read_object(store.name, column["path"])
        assert content_hash(stored) == column["hash"], "the object's content does not hash to the column's hash"
        assert len(stored) == column["size"]
        assert store_files(store.name) == [column["path"]], "staging objects were left behind"

    def check_same_column(self, table: Table, ours: dict[str, Any], theirs: dict[str, Any], store: StoreInfo) -> None:
        assert ours == theirs, "staged column value (left) != insert1's: same stored bytes give the same hash and path"

    def test_staged_dedup_hit(self, table: Table, djstaged_conformance_store: StoreInfo, tmp_path: Path) -> None:
        self.check_protocol(table)
        self.insert_staged(table, STAGED, tmp_path)
        self.insert_staged(table, OTHER, tmp_path)
        first, second = column_value(table, STAGED, FIELD), column_value(table, OTHER, FIELD)
        assert first == second
        assert store_files(djstaged_conformance_store.name) == [first["path"]], "expected exactly one canonical object"
        (_, a), (_, b) = self.fetch(table, STAGED, tmp_path), self.fetch(table, OTHER, tmp_path)
        assert_equivalent(a, b, f"fetched {FIELD}")

    def test_staged_concurrent_canonical_collision(
        self, table: Table, djstaged_conformance_store: StoreInfo, tmp_path: Path
    ) -> None:
        """The canonical object appears after staging began and before promotion: another writer got there first."""
        self.check_protocol(table)
        store = djstaged_conformance_store.name
        with staged_insert1(table) as staged:
            staged.rec.update(STAGED)
            self.write(staged, FIELD, self.sample(tmp_path))
            assert all(f.startswith("_staging/") for f in store_files(store)), "content must be staged, not canonical"
            self.insert_ordinary(table, ORDINARY, tmp_path)  # the concurrent writer wins the race to the canonical path
            canonical = column_value(table, ORDINARY, FIELD)["path"]
            identity = object_identity(store, canonical)
        assert column_value(table, STAGED, FIELD) == column_value(table, ORDINARY, FIELD)
        assert store_files(store) == [canonical], "the staging copy must be dropped, nothing else left"
        assert object_identity(store, canonical) == identity, "the other writer's object was replaced"
        field = staged.field(FIELD)
        if isinstance(field.participant, HashAddressedStaging):
            assert cast("HashAddressedState", field.state).promoted is False, "promotion did not take the dedup branch"


class PlacedConformance(StagedCodecConformance):
    """Suite for codecs whose value is a path the writer chooses (``<filepath@>``): the bytes are placed there.

    ``write`` passes ``**self.placement(staged)`` to ``staged.open()`` or
    ``staged.store()`` (the path the kit chose for the row, and whether it may
    overwrite); ``put`` writes a sample where an ordinary ``insert1`` expects
    to find it (bytes, or a dict of relative name to bytes for a folder).
    """

    addressing = "placed"

    #: the chosen path's last part: ``conformance/{subject_id}/{session_id}/data{suffix}``
    suffix: str = ".bin"
    overwrite: bool = False  # what placement() asks for: set by the kit's own tests while they write
    target: str | None = None  # a path placement() asks for instead of the row's own: set likewise

    def chosen_path(self, key: dict[str, Any]) -> str:
        """The path the kit chooses for the row ``key``."""
        return f"conformance/{key['subject_id']}/{key['session_id']}/data{self.suffix}"

    def placement(self, staged: Any) -> dict[str, Any]:
        """``path=`` and ``overwrite=`` for the handle of the row ``staged`` drafts."""
        return {"path": self.target or self.chosen_path(staged.rec), "overwrite": self.overwrite}

    def put(self, store: str, path: str, sample: Any) -> None:
        """Write ``sample`` at ``path`` in ``store``, as the software an ordinary ``insert1`` follows would."""
        if isinstance(sample, dict):
            for name, data in sample.items():
                put_object(store, f"{path}/{name}", data)
        else:
            put_object(store, path, sample)

    def insert_ordinary(self, table: Any, key: dict[str, Any], tmp_path: Path) -> Any:
        """Put the sample at the row's chosen path, then ``insert1`` the path."""
        path = self.chosen_path(key)
        self.put(table.heading[FIELD].store, path, self.sample(tmp_path))
        table.insert1({**key, FIELD: path})

    def check_path(self, table: Any, key: dict[str, Any], column: dict[str, Any], store: StoreInfo) -> None:
        assert column["path"] == self.chosen_path(key), "the value is not at the path the writer chose"

    def check_same_column(self, table: Any, ours: dict[str, Any], theirs: dict[str, Any], store: StoreInfo) -> None:
        skip = {"path", "timestamp"}
        same = {k: v for k, v in ours.items() if k not in skip}
        assert same == {k: v for k, v in theirs.items() if k not in skip}, "staged column value (left) != insert1's"

    def _staged(
        self, table: Any, key: dict[str, Any], tmp_path: Path, *, overwrite: bool, target: str | None = None
    ) -> None:
        self.overwrite, self.target = overwrite, target
        try:
            self.insert_staged(table, key, tmp_path)
        finally:
            self.overwrite, self.target = False, None

    def test_a_path_that_holds_something_is_refused(
        self, table: Any, djstaged_conformance_store: StoreInfo, tmp_path: Path
    ) -> None:
        self.check_protocol(table)
        store = djstaged_conformance_store.name
        self.put(store, self.chosen_path(STAGED), b"not ours")
        before = {path: read_object(store, path) for path in store_files(store)}
        with pytest.raises(PathTakenError, match="overwrite=True"):
            self.insert_staged(table, STAGED, tmp_path)
        assert {path: read_object(store, path) for path in store_files(store)} == before
        assert len(table) == 0

    def test_overwrite_replaces_what_no_row_references(
        self, table: Any, djstaged_conformance_store: StoreInfo, tmp_path: Path
    ) -> None:
        self.check_protocol(table)
        self.put(djstaged_conformance_store.name, self.chosen_path(STAGED), b"left over")
        self._staged(table, STAGED, tmp_path, overwrite=True)
        self.assert_fetched_as_ordinary(table, tmp_path)

    def test_a_path_a_row_references_is_never_replaced(
        self, table: Any, djstaged_conformance_store: StoreInfo, tmp_path: Path
    ) -> None:
        self.check_protocol(table)
        store = djstaged_conformance_store.name
        self.insert_ordinary(table, ORDINARY, tmp_path)
        before = {path: read_object(store, path) for path in store_files(store)}
        with pytest.raises(PathTakenError, match="referenced by a row"):
            self._staged(table, STAGED, tmp_path, overwrite=True, target=self.chosen_path(ORDINARY))
        assert {path: read_object(store, path) for path in store_files(store)} == before
        assert len(table) == 1

    def test_nothing_is_left_at_the_path_when_the_commit_fails_after_placement(
        self, table: Any, djstaged_conformance_store: StoreInfo, tmp_path: Path
    ) -> None:
        self.check_protocol(table)

        def fail(**context: Any) -> None:
            raise Abort(context["path"])

        with steps.observe("writer.place", fail), pytest.raises(Abort):
            self.insert_staged(table, STAGED, tmp_path)
        assert store_files(djstaged_conformance_store.name) == []
        assert len(table) == 0


class NonParticipatingCodecConformance(_Suite):
    """Suite for a field type that must be refused by ``store()``/``open()`` (in-table, reference, no protocol)."""

    def test_staged_handle_rejects_non_participating_codecs(
        self, table: Table, djstaged_conformance_store: StoreInfo
    ) -> None:
        match = re.match(r"<(\w+)", self.codec)
        assert match is not None, f"codec {self.codec!r} is not written as <name...>"
        name = match.group(1)
        for ask in ("store", "open"):
            with pytest.raises(NotParticipatingError) as caught:
                with staged_insert1(table) as staged:
                    staged.rec.update(STAGED)
                    getattr(staged, ask)(FIELD, ".bin")
            message = str(caught.value)
            assert f"<{name}>" in message and f"'{FIELD}'" in message, f"{ask}(): message must name it: {message}"
        assert store_files(djstaged_conformance_store.name) == []
        assert len(table) == 0
