"""benchmarks.history: the figures read from a pytest-benchmark result, and what counts as a
move (either way, beyond the threshold, worst first)."""

from __future__ import annotations

from benchmarks.history import figures, machine_id, moved


def _result(min_s: float, ratio: float) -> dict:
    return {"benchmarks": [{"fullname": "benchmarks/suite/bench_x.py::test_a[k]",
                            "stats": {"min": min_s, "median": 2 * min_s},
                            "extra_info": {"framework/hand_written": ratio, "note": "text"}}]}


def test_figures_are_min_seconds_and_numeric_extra_info():
    assert figures(_result(0.5, 1.02)) == {"bench_x.py::test_a[k] min s": 0.5,
                                           "bench_x.py::test_a[k] framework/hand_written": 1.02}


def test_moves_beyond_the_threshold_either_way_worst_first():
    old = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 2.0}
    new = {"a": 1.09, "b": 1.25, "c": 0.8, "e": 3.0}
    rows = moved(old, new, 0.10)
    assert [r[0] for r in rows] == ["b", "c"]  # a moved 9 %; d and e are not in both
    assert rows[0][3] == 0.25 and round(rows[1][3], 6) == -0.2


def test_machine_id_is_a_folder_name():
    name = machine_id()
    assert name.endswith("cpu") and "/" not in name and " " not in name
