"""The pausable child process of tests/support: real SIGSTOP/SIGCONT at named points."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from support.child import ChildDied, ChildError, PausableChild, pause_here, process_state


def write_pause_write(folder: str) -> str:
    """Target: first file, pause at "midway", second file; returns a value the parent checks."""
    Path(folder, "first").write_text("1")
    pause_here("midway")
    Path(folder, "second").write_text("2")
    return f"done in {folder}"


def two_pauses(folder: str) -> list[str]:
    pause_here("one")
    Path(folder, "between").touch()
    pause_here("two")
    return sorted(p.name for p in Path(folder).iterdir())


def fail(message: str) -> None:
    raise KeyError(message)


def unpicklable_result() -> object:
    return lambda: None


def test_pauses_at_label_and_resumes(tmp_path):
    with PausableChild(write_pause_write, str(tmp_path)) as child:
        child.wait_paused("midway")
        assert process_state(child.pid) == "T"
        assert (tmp_path / "first").exists() and not (tmp_path / "second").exists()
        child.resume()
        assert child.join() == f"done in {tmp_path}"
        assert (tmp_path / "second").read_text() == "2"
        assert child.exitcode == 0


def test_several_pauses_in_order(tmp_path):
    with PausableChild(two_pauses, folder=str(tmp_path)) as child:
        child.wait_paused("one")
        assert not (tmp_path / "between").exists()
        child.resume()
        child.wait_paused("two")
        assert (tmp_path / "between").exists()
        child.resume()
        assert child.join() == ["between"]


def test_pause_at_another_label_is_reported(tmp_path):
    with PausableChild(two_pauses, str(tmp_path)) as child:
        with pytest.raises(AssertionError, match="paused at 'one', expected 'two'"):
            child.wait_paused("two")
    assert child.exitcode == -signal.SIGKILL  # leaving the block killed the stopped child


def test_target_error_reaches_parent():
    with PausableChild(fail, "no such key") as child:
        with pytest.raises(ChildError) as raised:
            child.join()
    assert raised.value.type_name == "KeyError"
    assert raised.value.message == "'no such key'"
    assert "in fail" in raised.value.traceback and "raise KeyError(message)" in raised.value.traceback


def test_unpicklable_result_is_an_error():
    with PausableChild(unpicklable_result) as child:
        with pytest.raises(ChildError, match="cannot send the result back"):
            child.join()


def test_error_before_the_pause_is_reported_by_wait_paused():
    with PausableChild(fail, "early") as child:
        with pytest.raises(AssertionError, match="ended before pausing at 'midway'") as raised:
            child.wait_paused("midway")
    assert isinstance(raised.value.__cause__, ChildError)


def test_kill_a_paused_child(tmp_path):
    with PausableChild(write_pause_write, str(tmp_path)) as child:
        child.wait_paused("midway")
        child.kill()
        with pytest.raises(ChildDied) as raised:
            child.join()
    assert raised.value.signal == signal.SIGKILL and raised.value.exitcode == -9
    assert not (tmp_path / "second").exists()


def test_join_while_paused_is_refused(tmp_path):
    with PausableChild(write_pause_write, str(tmp_path)) as child:
        with pytest.raises(AssertionError, match="paused at 'midway' while being joined"):
            child.join()


def test_pause_here_outside_a_child_refuses():
    with pytest.raises(RuntimeError, match="only works inside a PausableChild"):
        pause_here("never")
