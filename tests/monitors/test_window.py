from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ctloop.monitors.window import TumblingWindows, Window, WindowPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _rows(n: int, x: float = 1.0) -> list[dict]:
    return [{"x": x + i, "c": "a"} for i in range(n)]


def test_window_closes_at_the_first_batch_boundary_at_or_after_max_rows():
    windows = TumblingWindows(WindowPolicy(max_rows=10), ["x"], ["c"])
    assert windows.add(_rows(6), T0, marker=1) == []
    closed = windows.add(_rows(6), T0 + timedelta(seconds=1), marker=2)
    assert len(closed) == 1
    window = closed[0]
    assert (window.rows, window.batches, window.markers) == (12, 2, {None: 2})
    assert (window.start, window.end) == (T0, T0 + timedelta(seconds=1))
    assert window.numeric_values("x").size == 12
    assert windows.current.rows == 0


def test_window_closes_by_event_time_before_taking_a_late_batch():
    windows = TumblingWindows(WindowPolicy(max_rows=None, max_seconds=60), ["x"], [])
    windows.add(_rows(3), T0, marker="a")
    assert windows.add(_rows(1), T0 + timedelta(seconds=59), marker="b") == []
    closed = windows.add(_rows(2), T0 + timedelta(seconds=61), marker="c")
    assert [w.rows for w in closed] == [4]
    assert windows.current.rows == 2


def test_idle_window_closes_by_wall_clock_whatever_its_batches_say():
    now = [100.0]
    windows = TumblingWindows(WindowPolicy(max_rows=None, max_seconds=60), ["x"], [], clock=lambda: now[0])
    windows.add(_rows(3), T0 - timedelta(days=300), marker="old")
    now[0] = 159.0
    assert windows.close_due() is None
    now[0] = 160.0
    idle = windows.close_due()
    assert idle is not None and idle.markers == {None: "old"}
    assert windows.close_due() is None, "a window with no batch never closes"


def test_policy_needs_a_bound():
    with pytest.raises(ValueError, match="max_rows, max_seconds"):
        WindowPolicy(max_rows=None, max_seconds=None)
    with pytest.raises(ValueError, match="max_rows"):
        WindowPolicy(max_rows=0)


def test_bad_rows_are_counted_by_kind_and_their_bad_cells_left_out():
    window = Window(["x", "y"], ["c"])
    rows = [
        {"x": 1.0, "y": 2, "c": "a"},               # good
        {"x": 1.0, "c": "a"},                        # missing y
        {"x": 1.0, "y": 2, "c": "a", "z": 9},        # extra z
        {"x": float("nan"), "y": None, "c": None},   # nan in three cells: one row
        {"x": "1.5", "y": True, "c": ["a"]},         # wrong types
        {"x": float("inf"), "y": 3, "c": "b", "w": 1},  # nan (inf) and extra
    ]
    window.add(rows, T0)
    assert window.bad_rows() == {"missing": 1, "extra": 2, "nan": 2, "wrong_type": 1}
    assert window.rows == 6
    assert np.array_equal(window.numeric_values("x"), [1.0, 1.0, 1.0])
    assert np.array_equal(window.numeric_values("y"), [2.0, 2.0, 3.0])
    assert window.category_counts("c") == {"a": 3, "b": 1}


def test_clean_batches_count_no_bad_rows():
    window = Window(["x"], ["c"])
    window.add([{"x": 1, "c": "a"}, {"x": 2.5, "c": 3}], T0)
    assert sum(window.bad_rows().values()) == 0
    assert window.category_counts("c") == {"a": 1, 3: 1}


def test_window_remembers_the_latest_marker_of_each_stream():
    window = Window(["x"], [])
    window.add(_rows(1), T0, marker="p0-5", stream=0)
    window.add(_rows(1), T0, marker="p1-2", stream=1)
    window.add(_rows(1), T0, marker="p0-6", stream=0)
    assert window.markers == {0: "p0-6", 1: "p1-2"}


def test_kept_rows_come_back_as_a_frame_with_bad_cells_missing():
    window = Window(["x"], ["c"], keep_rows=True)
    window.add([{"x": 1.5, "c": "a"}, {"x": "bad", "c": {"no": 1}}, {"c": 2}], T0)
    frame = window.frame()
    assert frame["x"].tolist()[0] == 1.5 and frame["x"].isna().tolist() == [False, True, True]
    assert frame["c"].tolist() == ["a", None, 2]
