"""Evaluation attacks: parsing, monotonicity, worst-case aggregation and the CLI."""

import pytest
import torch
from mlflow.tracking import MlflowClient

from envs.threat import make_threat
from runners.cotrain import cotrain
from runners.evaluate import AttackSpec, evaluate, main, parse_attack


def test_parse_attack():
    assert parse_attack("pgd50x10") == AttackSpec("pgd50x10", "pgd", 50, 10)
    assert parse_attack("cw30") == AttackSpec("cw30", "cw", 30, 1)
    assert parse_attack("fgsm") == AttackSpec("fgsm", "fgsm", 1, 1)
    for bad in ("pgd", "fgsm3", "autoatack", "pgdx3"):
        with pytest.raises(ValueError, match="valid: clean, fgsm"):
            parse_attack(bad)


def test_attacks_lower_accuracy_and_worst_case_is_the_intersection(tiny_net):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = tiny_net(x).argmax(1)  # all correct when clean
    res = evaluate(tiny_net, x, y, ["clean", "fgsm", "pgd10", "pgd10x3", "cw10"],
                   make_threat("linf"), 0.1, batch_size=32,
                   generator=torch.Generator().manual_seed(0))
    assert res["clean"]["acc"] == 1.0
    assert res["pgd10"]["acc"] < 1.0
    assert res["pgd10x3"]["acc"] <= res["pgd10"]["acc"] + 1e-9  # restarts only attack survivors
    assert res["worst_case"]["acc"] <= min(v["acc"] for k, v in res.items() if k != "worst_case")


def test_evaluate_cli_logs_into_the_run(tmp_path, tracking_uri, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    run_id = cotrain(["epochs=1", "policy.steps=1", "eval.test_subset=32", "eval.final_pgd_steps=1",
                      "progress=false", f"checkpoint_dir={tmp_path}/ck"], tracking_uri)
    assert main([f"run_id={run_id}", "attacks=[clean,pgd5]", "n_examples=64",
                 f"checkpoint_dir={tmp_path}/ck", "progress=false"]) == 0
    metrics = MlflowClient(tracking_uri).get_run(run_id).data.metrics
    assert {"eval/clean_acc", "eval/pgd5_acc", "eval/worst_case_acc"} <= set(metrics)
    assert metrics["eval/pgd5_acc"] <= metrics["eval/clean_acc"]
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"run_id={run_id}"
