"""Tests of runners.inspect."""

from __future__ import annotations


from learned_at.runners.inspect import format_distribution_table, main
from tests.helpers import run_command

CATEGORICAL = [
    {"epoch": 0, "values": [2 / 255, 8 / 255], "fractions": [0.25, 0.75], "mean": 0.0255, "n": 4},
    {"epoch": 1, "values": [2 / 255, 8 / 255], "fractions": [0.5, 0.5], "mean": 0.0196, "n": 4},
]


def test_categorical_table():
    table = format_distribution_table(CATEGORICAL, "eps")
    lines = table.splitlines()
    assert lines[0].startswith("eps")
    assert "2/255" in lines[1] and "8/255" in lines[1] and "mean" in lines[1]
    assert lines[2].split()[:3] == ["1", "25.0", "75.0"]  # epochs numbered from 1
    assert lines[3].split()[:3] == ["2", "50.0", "50.0"]
    assert "0.0255" in lines[2]


def test_categories_are_the_values_used_and_a_constant_is_one_line():
    rows = [{"epoch": 0, "values": [10.0], "fractions": [1.0], "mean": 10.0, "n": 8},
            {"epoch": 1, "values": [10.0], "fractions": [1.0], "mean": 10.0, "n": 8}]
    assert format_distribution_table(rows, "steps") == \
        "steps: 10 for every sample (epochs 1-2)"
    rows[1] = {"epoch": 1, "values": [3.0, 10.0], "fractions": [0.25, 0.75], "mean": 8.25,
               "n": 8}
    lines = format_distribution_table(rows, "steps").splitlines()
    assert lines[1].split()[:3] == ["epoch", "3", "10"]
    assert lines[2].split()[:3] == ["1", "0.0", "100.0"]
    assert lines[3].split()[:3] == ["2", "25.0", "75.0"]


def test_histogram_table_shared_and_varying_edges():
    shared = [
        {"epoch": 0, "edges": [0.0, 1.0, 2.0], "fractions": [0.1, 0.9], "mean": 1.4, "n": 10},
        {"epoch": 1, "edges": [0.0, 1.0, 2.0], "fractions": [0.0, 1.0], "mean": 1.5, "n": 10},
    ]
    lines = format_distribution_table(shared, "alpha").splitlines()
    assert lines[1].split()[:3] == ["epoch", "0.5", "1.5"]
    assert lines[2].split()[:3] == ["1", "10.0", "90.0"]
    assert lines[3].split()[:3] == ["2", "0.0", "100.0"]

    varying = [shared[0], {**shared[1], "edges": [1.0, 2.0, 3.0]}]
    lines = format_distribution_table(varying, "alpha").splitlines()
    assert "bin1" in lines[1] and "range" in lines[1]
    assert lines[3].endswith("[1, 3]")


def test_empty_rows():
    assert "no data" in format_distribution_table([], "eps")


def test_cli_rejects_unknown_tokens(capsys):
    assert run_command(main, ["run_id=abc", "bogus=1"]) == 2
    message = capsys.readouterr().err
    assert "run_id" in message and "key" in message and "tracking_uri" in message
    assert run_command(main, []) == 2
    assert "run_id" in capsys.readouterr().err


def test_cli_prints_tables(tmp_path, monkeypatch, capsys):
    import torch

    from learned_at.runners.distributions import DistributionHistory, log_distributions
    from learned_at.runners.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    hist = DistributionHistory()
    hist.declare("eps", [2 / 255, 8 / 255])
    with Tracker("t", tracking_uri=uri) as tracker:
        hist.add("eps", torch.tensor([2 / 255, 8 / 255, 8 / 255, 8 / 255]))
        hist.add("alpha", torch.rand(10))
        hist.end_epoch(0)
        log_distributions(tracker, hist, 0)
    assert run_command(main, [f"run_id={tracker.run_id}", "key=eps", f"tracking_uri={uri}"]) == 0
    out, err = capsys.readouterr()
    assert "25.0" in out and "75.0" in out and "alpha" not in out
    assert "Downloading" not in err  # no download bars
    assert run_command(main, [f"run_id={tracker.run_id}", f"tracking_uri={uri}"]) == 0
    assert "alpha" in capsys.readouterr().out
