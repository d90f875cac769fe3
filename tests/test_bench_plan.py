"""The benchmark's plan and verdicts: how often each row runs, in what order, and on which ratio a target is judged."""

from __future__ import annotations

import pytest

from bench.plan import FAST_EXTRA_ROUNDS, ROWS, SCALING_ROUNDS, all_rows, find
from bench.report import derive
from bench.run import block, row_rounds, schedule


def test_rounds_per_row_follow_the_plan():
    assert row_rounds(find("npy"), 3) == 3 + FAST_EXTRA_ROUNDS
    assert row_rounds(find("plain_write"), 3) == row_rounds(find("npy"), 3)  # a ratio's two sides pair up
    assert row_rounds(find("dj_blob"), 3) == 1
    assert row_rounds(find("zarr@4"), 3) == SCALING_ROUNDS
    assert {row_rounds(row, 1) for row in all_rows()} == {1}


def test_every_target_row_runs_as_often_as_its_baseline():
    labels = {row.label: row for row in ROWS}
    for row in ROWS:
        if row.max_ratio is not None:
            assert row_rounds(row, 3) == row_rounds(labels[row.baseline], 3), row.key


def test_schedule_runs_each_row_its_rounds_with_blocks_back_to_back():
    rows = all_rows()
    plan = schedule(rows, 3)
    for row in rows:
        assert [r for r, planned in plan if planned is row] == list(range(1, row_rounds(row, 3) + 1))
    for r in {r for r, _ in plan}:
        order = [block(row) for rr, row in plan if rr == r]
        seen = [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]
        assert len(seen) == len(set(seen)), f"round {r} interleaves blocks: {seen}"


def _result(key: str, rounds: list[float]) -> dict:
    return {
        "key": key,
        "payload_bytes": 1 << 30,
        "written_bytes": 1 << 30,
        "seconds": min(rounds),
        "seconds_median": sorted(rounds)[len(rounds) // 2],
        "seconds_rounds": rounds,
        "peak_above_before_mib": 1.0,
    }


@pytest.mark.parametrize(
    ("ours", "ok"),
    [
        ([1.05, 1.05, 2.0], True),  # one stall in our rounds: the median pair is clean
        ([1.2, 1.2, 1.0], False),  # slower in most rounds, though the best round is fast
    ],
)
def test_ratio_target_is_judged_on_the_median_pair(ours, ok):
    rows = [find("plain_write"), find("npy")]
    results = {"plain_write": _result("plain_write", [1.0, 1.0, 1.0]), "npy": _result("npy", ours)}
    (entry,) = [e for e in derive(rows, results) if e["key"] == "npy"]
    (check,) = [c for c in entry["checks"] if "plain write" in c["target"]]
    assert check["ok"] is ok
    assert entry["ratio_paired"] == pytest.approx(sorted(o / 1.0 for o in ours)[1])
