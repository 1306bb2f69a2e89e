"""at_loss=fast_bat end to end: tracked co-training with a validation split, evaluation at
several budgets, refused combinations, the policies it combines with, the paper's recipe."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from learned_at.runners.compose import compose_config
from learned_at.runners.config import ConfigError
from learned_at.runners.cotrain import cotrain, main
from learned_at.runners.evaluate import budget_prefix, main as evaluate_main, parse_budget
from learned_at.runners.run import build_run
from learned_at.runners.train import train_step
from tests.helpers import run_command

TINY = ["at_loss=fast_bat", "policy=fgsm_rs", "epochs=1", "batch_size=64",
        "data.train_subset=192", "eval.test_subset=32", "eval.final_pgd_steps=2",
        "monitor.pgd_steps=2", "progress=false"]


def test_tracked_run_with_validation_split_then_evaluation_at_two_budgets(
        tmp_path, tracking_uri, monkeypatch, capsys, one_thread):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    ck = f"checkpoint_dir={tmp_path}/ck"
    run_id = cotrain([*TINY, "data.val_size=64", ck], tracking_uri)
    client = MlflowClient(tracking_uri)
    m = client.get_run(run_id).data.metrics
    for key in ("train/loss", "train/implicit_norm", "train/upper_grad_norm",
                "train/h_active_fraction", "val/clean_acc", "val/pgd_acc", "eval/clean_acc",
                "eval/pgd2_acc", "monitor/test_pgd_acc"):
        assert key in m, key
    assert "test/pgd_acc" not in m  # per-epoch monitoring ran on the validation split
    assert m["train/implicit_norm"] > 0 and 0 < m["train/h_active_fraction"] < 1
    assert client.get_run(run_id).data.params["at_loss.ig_point"] == "z"

    assert run_command(evaluate_main, [f"run_id={run_id}", "attacks=[clean,pgd2]", "eps=[0.2,1/10]",
                          "n_examples=32", "progress=false", ck]) == 0
    out = capsys.readouterr().out
    assert "| pgd2 | 0.1 | 32 |" in out and "| pgd2 | 0.2 | 32 |" in out
    eval_id = next(line.split("=", 1)[1] for line in out.splitlines()
                   if line.startswith("evaluation_run_id="))
    m = client.get_run(eval_id).data.metrics
    assert "eval/eps0.1/pgd2_acc" in m and "eval/pgd2_acc" in m
    assert m["eval/eps0.1/clean_acc"] == m["eval/clean_acc"]
    assert run_command(evaluate_main, [f"run_id={run_id}", "eps=[8/x]", ck]) == 2
    assert "fraction" in capsys.readouterr().err
    assert run_command(evaluate_main, [f"run_id={run_id}", "eps=[0.1]", "checks=true", ck]) == 2
    assert "checks=true" in capsys.readouterr().err


def test_budget_names():
    assert parse_budget("8/255") == pytest.approx(8 / 255)
    assert budget_prefix(8 / 255, 0.03137254901960784) == "eval/"
    assert budget_prefix(16 / 255, 8 / 255) == "eval/eps0.06275/"


@pytest.mark.parametrize("overrides, fix", [
    (["policy=pgd_at", "at_loss.z_from=raw_step"], "policy=fgsm_rs"),
    (["policy=las_at", "at_loss.z_from=raw_step"], "at_loss.z_from=auto"),
    (["policy=none", "at_loss.z_from=raw_step"], "no attack step"),
    (["policy=fgsm_rs", "threat=l2"], "threat=linf"),
    (["policy=fgsm_rs", "data.val_size=5000"], "data.val_size"),
])
def test_refused_combinations_exit_with_one_line(overrides, fix, capsys):
    args = [a for a in TINY if not a.startswith("policy=")]
    assert run_command(main, [*args, *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert fix in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("overrides", [
    ["policy=fgsm_at"],
    ["policy=fgsm_pgi"],
    ["policy=none"],
    ["policy=pgd_at", "policy.steps=2", "at_loss.z_from=episode"],
    ["policy=las_at", "at_loss.ig_point=delta_star"],  # the run's default policy
])
def test_combines_with_policies(overrides, one_thread):
    args = [a for a in TINY if not a.startswith("policy=")]
    run = build_run(compose_config([*args, *overrides, "data.train_subset=128"]))
    before = [p.detach().clone() for p in run.target.model.parameters()]
    norms = torch.stack([train_step(run, b, 0, step)[0]["train/implicit_norm"]
                         for step, b in enumerate(run.loader)])
    assert torch.isfinite(norms).all() and norms.mean() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, run.target.model.parameters()))


def test_paper_recipe():
    cfg = compose_config(["recipe=fast_bat_cifar10"])
    assert (cfg.data.name, cfg.target.name, cfg.at_loss.name, cfg.policy.name) == (
        "cifar10", "preact_resnet18", "fast_bat", "fgsm_rs")
    assert cfg.epochs == 20 and cfg.optim.lr == 0.2 and cfg.optim.schedule == "cyclic"
    assert cfg.optim.cyclic_peak == 0.5 and cfg.data.val_size == 5000
    assert (cfg.eval.final_pgd_steps, cfg.eval.final_restarts) == (50, 10)
    assert cfg.threat.eps == pytest.approx(8 / 255)
    assert compose_config(["recipe=fast_bat_cifar10_eps16"]).threat.eps == pytest.approx(16 / 255)
    with pytest.raises(ConfigError, match="data.val_size"):
        build_run(compose_config([*TINY, "data.val_size=-1"]))
