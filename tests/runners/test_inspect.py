"""Tests of runners.inspect."""

from __future__ import annotations

import pytest

from runners.inspect import format_distribution_table, main

CATEGORICAL = [
    {"epoch": 0, "values": [2 / 255, 8 / 255], "fractions": [0.25, 0.75], "mean": 0.0255, "n": 4},
    {"epoch": 1, "values": [2 / 255, 8 / 255], "fractions": [0.5, 0.5], "mean": 0.0196, "n": 4},
]


def test_categorical_table():
    table = format_distribution_table(CATEGORICAL, "eps")
    lines = table.splitlines()
    assert lines[0].startswith("eps")
    assert "2/255" in lines[1] and "8/255" in lines[1] and "mean" in lines[1]
    assert lines[2].split()[:3] == ["0", "25.0", "75.0"]
    assert lines[3].split()[:3] == ["1", "50.0", "50.0"]
    assert "0.0255" in lines[2]


def test_histogram_table_shared_and_varying_edges():
    shared = [
        {"epoch": 0, "edges": [0.0, 1.0, 2.0], "fractions": [0.1, 0.9], "mean": 1.4, "n": 10},
        {"epoch": 1, "edges": [0.0, 1.0, 2.0], "fractions": [0.0, 1.0], "mean": 1.5, "n": 10},
    ]
    lines = format_distribution_table(shared, "alpha").splitlines()
    assert lines[1].split()[:3] == ["epoch", "0.5", "1.5"]
    assert lines[2].split()[:3] == ["0", "10.0", "90.0"]
    assert lines[3].split()[:3] == ["1", "0.0", "100.0"]

    varying = [shared[0], {**shared[1], "edges": [1.0, 2.0, 3.0]}]
    lines = format_distribution_table(varying, "alpha").splitlines()
    assert "bin1" in lines[1] and "range" in lines[1]
    assert lines[3].endswith("[1, 3]")


def test_empty_rows():
    assert "no data" in format_distribution_table([], "eps")


def test_cli_rejects_unknown_tokens():
    with pytest.raises(SystemExit) as info:
        main(["run_id=abc", "bogus=1"])
    message = str(info.value.code)
    assert "run_id" in message and "key" in message and "tracking_uri" in message
    with pytest.raises(SystemExit, match="run_id"):
        main([])


def test_cli_prints_tables(tmp_path, monkeypatch, capsys):
    import torch

    from runners.distributions import DistributionHistory, log_distributions
    from runners.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    hist = DistributionHistory()
    hist.declare("eps", [2 / 255, 8 / 255])
    with Tracker("t", tracking_uri=uri) as tracker:
        hist.add("eps", torch.tensor([2 / 255, 8 / 255, 8 / 255, 8 / 255]))
        hist.add("alpha", torch.rand(10))
        hist.end_epoch(0)
        log_distributions(tracker, hist, 0)
    assert main([f"run_id={tracker.run_id}", "key=eps", f"tracking_uri={uri}"]) == 0
    out = capsys.readouterr().out
    assert "25.0" in out and "75.0" in out and "alpha" not in out
    assert main([f"run_id={tracker.run_id}", f"tracking_uri={uri}"]) == 0
    assert "alpha" in capsys.readouterr().out
