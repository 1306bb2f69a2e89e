"""Tests of runners.distributions."""

from __future__ import annotations

import json
import math

import pytest
import torch

from learned_at.runners.distributions import (DistributionHistory, aligned_rows, distribution_table,
                                              is_constant, log_distributions, rows_from_table)
from learned_at.runners.formatting import format_grid_value
from learned_at.runners.tracking import Tracker

GRID = [2 / 255, 4 / 255, 8 / 255, 16 / 255]


def test_categorical_fractions_exact():
    hist = DistributionHistory()
    hist.declare("eps", GRID)
    hist.add("eps", torch.tensor([2 / 255, 8 / 255, 8 / 255]))
    # 8.2/255 is matched to 8/255, 17/255 to 16/255
    hist.add("eps", torch.tensor([[8.2 / 255, 17 / 255]], dtype=torch.float32))
    summary = hist.end_epoch(0)
    (row,) = hist.history("eps")
    assert row["epoch"] == 0
    assert row["values"] == GRID
    assert len(row["fractions"]) == len(GRID)
    assert row["fractions"] == pytest.approx([0.2, 0.0, 0.6, 0.2])
    assert sum(row["fractions"]) == pytest.approx(1.0)
    assert row["n"] == 5
    values = sorted([2 / 255, 8 / 255, 8 / 255, 8.2 / 255, 17 / 255])
    assert row["mean"] == pytest.approx(sum(values) / 5, rel=1e-6)
    assert row["p50"] == pytest.approx(8 / 255, rel=1e-6)
    assert row["p10"] == pytest.approx(values[0] + 0.4 * (values[1] - values[0]), rel=1e-6)
    assert summary["eps"]["mean"] == row["mean"]
    assert set(summary["eps"]) == {"mean", "p10", "p50", "p90"}


def test_accumulators_reset_and_empty_epoch():
    hist = DistributionHistory()
    hist.declare("eps", GRID)
    hist.add("eps", torch.tensor([GRID[0]]))
    hist.end_epoch(0)
    assert hist.end_epoch(1) == {}
    hist.add("eps", torch.tensor([GRID[3], GRID[3]]))
    hist.end_epoch(2)
    rows = hist.history("eps")
    assert [r["epoch"] for r in rows] == [0, 2]
    assert rows[1]["fractions"] == [0.0, 0.0, 0.0, 1.0]


def test_histogram_fixed_edges_and_default_bins():
    hist = DistributionHistory(default_bins=4)
    hist.declare_hist("alpha", [0.0, 1.0, 2.0, 4.0])
    hist.add("alpha", torch.tensor([0.5, 1.0, 1.5, 3.0, 9.0, -1.0, float("nan")]))
    hist.add("steps", torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0]))
    hist.end_epoch(3)
    (alpha,) = hist.history("alpha")
    assert alpha["edges"] == [0.0, 1.0, 2.0, 4.0]
    # -1 clamps into the first bin, 9 into the last; NaN is ignored
    assert alpha["fractions"] == pytest.approx([2 / 6, 2 / 6, 2 / 6])
    assert alpha["n"] == 6
    (steps,) = hist.history("steps")
    assert steps["edges"] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    assert steps["fractions"] == pytest.approx([1 / 8, 1 / 8, 1 / 8, 5 / 8])
    assert steps["mean"] == pytest.approx(22 / 8)
    assert steps["p90"] == pytest.approx(4.0)


def test_constant_values_and_all_nan():
    hist = DistributionHistory(default_bins=2)
    hist.add("c", torch.full((5,), 3.0))
    hist.add("bad", torch.tensor([float("nan")]))
    summary = hist.end_epoch(0)
    (c,) = hist.history("c")
    assert sum(c["fractions"]) == pytest.approx(1.0)
    assert c["edges"][0] < 3.0 < c["edges"][-1]
    (bad,) = hist.history("bad")
    assert bad["n"] == 0 and math.isnan(summary["bad"]["mean"])


def test_redeclare_conflict():
    hist = DistributionHistory()
    hist.declare("eps", GRID)
    hist.declare("eps", GRID)
    with pytest.raises(ValueError):
        hist.declare_hist("eps", [0.0, 1.0])
    with pytest.raises(ValueError):
        hist.declare_hist("x", [1.0, 1.0])


def test_state_dict_round_trip():
    hist = DistributionHistory(default_bins=5)
    hist.declare("eps", GRID)
    hist.add("eps", torch.tensor(GRID))
    hist.add("alpha", torch.rand(100))
    hist.end_epoch(0)
    state = hist.state_dict()
    json.dumps(state)  # plain python data
    restored = DistributionHistory()
    restored.load_state_dict(state)
    assert restored.history("eps") == hist.history("eps")
    assert restored.history("alpha") == hist.history("alpha")
    restored.add("eps", torch.tensor([GRID[1]]))
    restored.end_epoch(1)
    assert [r["epoch"] for r in restored.history("eps")] == [0, 1]
    assert restored.history("eps")[1]["fractions"] == [0.0, 1.0, 0.0, 0.0]
    assert len(hist.history("eps")) == 1  # the original is unaffected


def test_format_grid_value():
    assert format_grid_value(8 / 255) == "8/255"
    assert format_grid_value(10.0) == "10"
    assert format_grid_value(0.123456) == "0.123"


def test_log_distributions_writes_artifacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hist = DistributionHistory()
    hist.declare("eps", GRID)
    with Tracker("t", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db") as tracker:
        for epoch in range(3):
            hist.add("eps", torch.tensor(GRID[: epoch + 1]))
            hist.add("head/alpha", torch.rand(50) + epoch)
            hist.end_epoch(epoch)
            log_distributions(tracker, hist, epoch)
        client, run_id = tracker.client, tracker.run_id
        files = {a.path for a in client.list_artifacts(run_id, "distributions")}
        assert files == {"distributions/eps.json", "distributions/head.alpha.json"}
        plots = {a.path for a in client.list_artifacts(run_id, "plots")}
        assert plots == {"plots/eps_heatmap.png", "plots/head.alpha_heatmap.png"}
        # a long-format MLflow table, one line per (epoch, value): read back across runs
        table = client.load_table(tracker.experiment_id, "distributions/eps.json",
                                  run_ids=[run_id], extra_columns=["run_id"])
        assert set(table["key"]) == {"eps"} and set(table["kind"]) == {"categorical"}
        assert sorted(set(table["epoch"])) == [1, 2, 3]  # numbered as cotrain prints them
        last = table[table["epoch"] == 3].sort_values("value")
        assert list(last["fraction"]) == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])
        assert set(table["run_id"]) == {run_id}
        rows = rows_from_table(table)
        assert [r["epoch"] for r in rows] == [0, 1, 2]
        assert rows[2]["fractions"] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])
        tags = client.get_run(run_id).data.tags["mlflow.loggedArtifacts"]
        assert '"distributions/eps.json", "type": "table"' in tags
        png = tracker.download_artifact("plots/eps_heatmap.png", tmp_path / "dl")
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    history = client.get_metric_history(run_id, "policy/eps_mean")
    assert [m.step for m in history] == [0, 1, 2]
    with Tracker("t", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db") as tracker:
        log_distributions(tracker, hist, 2, plot=False)  # tracking.plot_every: not this epoch
        assert tracker.client.list_artifacts(tracker.run_id, "plots") == []


def test_few_distinct_values_are_categories_and_mixed_rows_align():
    hist = DistributionHistory(max_categories=4)
    hist.add("steps", torch.tensor([10.0, 10.0, 10.0]))
    hist.end_epoch(0)
    hist.add("steps", torch.tensor([3.0, 10.0]))
    hist.end_epoch(1)
    rows = hist.history("steps")
    assert rows[0]["values"] == [10.0] and rows[1]["values"] == [3.0, 10.0]
    assert is_constant(rows[:1]) and not is_constant(rows)
    aligned = aligned_rows(rows)
    assert aligned[0]["values"] == [3.0, 10.0] and aligned[0]["fractions"] == [0.0, 1.0]
    hist.add("steps", torch.arange(20.0))  # many values: a histogram epoch
    hist.end_epoch(2)
    mixed = aligned_rows(hist.history("steps"))
    assert all("edges" in r for r in mixed)
    assert mixed[0]["edges"][0] < 10.0 < mixed[0]["edges"][-1]
    table = distribution_table("steps", hist.history("steps"))
    assert set(table["kind"]) == {"histogram"} and table["epoch"][0] == 1


def test_pending_values_survive_a_mid_epoch_state_dict():
    hist = DistributionHistory()
    hist.add("eps", torch.tensor([1.0, 2.0]))
    state = hist.state_dict(include_pending=True)
    other = DistributionHistory()
    other.load_state_dict(state)
    hist.add("eps", torch.tensor([3.0]))
    other.add("eps", torch.tensor([3.0]))
    assert hist.end_epoch(0) == other.end_epoch(0)
