"""The README's *Errors*: each class in its table is raised where it says and caught by class; the decisions it
documents (an attachment without a filename, an extension without its dot, a block used without ``with``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from support.paths import ROOT, TESTS
from support.stores import store_files
from support.tables import attempt

import dj_staged
from dj_staged import errors

KEY = {"subject": "s", "session": 1}

NOT_RAISED_HERE: dict[str, str] = {}  # every class is; UnsupportedBackendError for a store's protocol, not for a
# database that is not PostgreSQL, which needs a MySQL or MariaDB server this suite does not run


def readme_error_classes() -> list[str]:
    """The classes in the README's table of errors."""
    text = (ROOT / "README.md").read_text().split("## Errors", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| (?:DataJoint's )?`(\w+)`", text, re.MULTILINE)


def test_every_class_in_the_readme_table_is_raised_by_a_test_that_catches_it_by_class():
    classes = readme_error_classes()
    assert set(classes) == set(errors.__all__) - {
        "DataJointError",
        "CommitRecoveredWarning",
        "IgnoredValueWarning",
        "ResumeRestartedWarning",
    }
    tests = [*TESTS.glob("test_*.py"), *TESTS.glob("*/test_*.py")]  # the suite's own, in its folders
    sources = "\n".join(p.read_text() for p in tests)
    for name in set(classes) - set(NOT_RAISED_HERE):
        assert re.search(rf"raises\(\(?(?:\w+\.)*{name}\b|expected = {name}\b", sources), name


def test_error_classes_are_at_the_top_level():
    for name in errors.__all__:
        if name not in ("DataJointError", "DuplicateError"):  # DataJoint's own, from datajoint.errors
            assert getattr(dj_staged, name) is getattr(errors, name) and name in dir(dj_staged)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchError'"):
        dj_staged.NoSuchError  # noqa: B018


def test_an_attachment_without_a_filename_is_an_invalid_path_error(Mixed, djstaged_local_store):
    def write_unnamed(staged):
        with staged.open("doc", ".pdf") as f:
            f.write(b"%PDF content, but no name")

    with pytest.raises(ValueError) as raised:  # an InvalidPathError is a ValueError
        attempt(Mixed, KEY, write_unnamed)
    assert type(raised.value) is dj_staged.InvalidPathError and raised.value.field == "doc"
    assert "has no filename: call staged.set_filename('doc', 'name.ext')" in str(raised.value)
    with pytest.raises(dj_staged.InvalidPathError):  # an empty name, at set_filename
        attempt(Mixed, KEY, lambda staged: staged.set_filename("doc", ""))
    assert len(Mixed()) == 0 and store_files(djstaged_local_store, leases=True) == []


def test_an_extension_without_its_dot_is_taken_as_datajoint_takes_it(Mixed, djstaged_local_store):
    with dj_staged.staged_insert1(Mixed) as staged:
        staged.rec.update(KEY)
        with staged.open("raw", "bin") as f:
            f.write(b"raw bytes")
        with staged.open("arr", "npy") as f:
            np.save(f, np.arange(3))
    staged_raw = Mixed.connection.query(f"SELECT raw FROM {Mixed.full_table_name}").fetchone()[0]
    Mixed.insert1({"subject": "s", "session": 2, "raw": ("bin", b"raw bytes")})  # DataJoint's own insert1
    inserted = Mixed.connection.query(f"SELECT raw FROM {Mixed.full_table_name} WHERE session = 2").fetchone()[0]
    assert staged_raw["path"].endswith(".bin") and inserted["path"].endswith(".bin")
    assert staged_raw["ext"] == inserted["ext"] == "bin"  # recorded as given, as insert1 records it
    row = (Mixed & KEY).fetch1()
    assert row["raw"].read() == b"raw bytes" and row["arr"].path.endswith(".npy")
    np.testing.assert_array_equal(row["arr"].load(), np.arange(3))
    with pytest.raises(dj_staged.InvalidPathError):  # what is not an extension is still refused
        attempt(Mixed, {"subject": "s", "session": 3}, lambda staged: staged.open("raw", "b/in"))


def test_a_block_used_without_with_says_how(Mixed):
    with pytest.raises(AttributeError) as raised:
        dj_staged.staged_insert1(Mixed).open("raw", ".bin")
    assert "`with dj_staged.staged_insert1(Table) as staged:`, then `staged.open` inside the block" in str(raised.value)
    with pytest.raises(AttributeError, match=r"then `with batch\.row\(\) as staged:` inside it"):
        dj_staged.staged_insert(Mixed).row()
    with pytest.raises(AttributeError, match="object has no attribute 'nothing_like_it'"):
        dj_staged.staged_insert1(Mixed).nothing_like_it  # noqa: B018
    assert len(Mixed()) == 0
