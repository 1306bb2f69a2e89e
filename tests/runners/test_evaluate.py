"""runners.evaluate: attack names, worst case over attacks, transfer, the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow import MlflowClient

from learned_at.envs.geometry import make_geometry
from learned_at.runners.evaluate import main
from learned_at.envs.attacks.autoattack import AutoAttack
from learned_at.envs.attacks.base import AttackRole, Clean
from learned_at.envs.attacks.gradient import CW, FGSM, PGD
from learned_at.envs.attacks.square import Square
from learned_at.envs.attacks.transfer import Transfer
from learned_at.runners.robustness import evaluate, log_evaluation, parse_attack, worst_case
from tests.helpers import run_command


def test_parse_attack_names():
    assert parse_attack("pgd50x10") == PGD("pgd50x10", 50, 10)
    assert parse_attack(" cw30 ") == CW("cw30", 30, 1)
    assert parse_attack("autoattack") == AutoAttack("autoattack")
    assert parse_attack("square") == Square("square", 5000)
    assert parse_attack("square200").queries == 200
    assert parse_attack("transfer_pgd20") == Transfer("transfer_pgd20", PGD("pgd20", 20, 1))
    assert parse_attack("clean") == Clean() and parse_attack("fgsm") == FGSM()
    for bad in ("pgd", "autoattack5", "square10x2", "transfer_autoattack", "transfer_clean",
                "fgsm3", "apgd", "transfer_transfer_pgd2", "transfer_ pgd2"):
        with pytest.raises(ValueError, match="valid: clean, fgsm, pgd<K>"):
            parse_attack(bad)
    with pytest.raises(ValueError, match=r"unknown attack 'pgd' for threat=l2; valid: clean"):
        parse_attack("pgd", make_geometry("l2"))


def test_attack_roles_strength_and_variants():
    """What the masking checks read: typed roles, strength order, stronger and query variants."""
    pgd, cw = parse_attack("pgd20"), parse_attack("cw20x3")
    assert pgd.roles == cw.roles == AttackRole.WHITEBOX and pgd.transferable
    assert pgd.ensemble_reference and not cw.ensemble_reference
    assert AttackRole.BLACKBOX in parse_attack("transfer_fgsm").roles
    assert parse_attack("transfer_fgsm").needs_surrogate and not pgd.needs_surrogate
    assert parse_attack("autoattack").roles == AttackRole.ENSEMBLE
    assert parse_attack("clean").roles == AttackRole.CLEAN
    assert pgd.not_stronger_than(parse_attack("pgd50x10"))
    assert not parse_attack("pgd50x10").not_stronger_than(parse_attack("pgd100"))
    assert not pgd.not_stronger_than(parse_attack("cw50x10"))  # another class
    assert pgd.stronger() == PGD("pgd40x2", 40, 2) and cw.stronger().name == "cw40x2"
    assert parse_attack("fgsm").stronger() is None
    assert Square.with_queries(300) == parse_attack("square300")


class _Tracker:
    """Records what log_evaluation hands to the tracker."""

    def __init__(self) -> None:
        self.metrics, self.tags, self.artifacts = {}, {}, []

    def log_metrics(self, metrics, step):
        self.metrics.update(metrics)

    def set_tag(self, key, value):
        self.tags[key] = value

    def log_dict(self, data, path):
        self.artifacts.append(path)

    def log_text(self, text, path):
        self.artifacts.append(path)


def test_log_evaluation_tags_what_the_attacks_ask_for():
    row = {"acc": 0.5, "time_s": 1.0, "n": 8}
    tracker = _Tracker()
    log_evaluation(tracker, {"pgd5": row, "autoattack": row, "autoattack.apgd-ce": row,
                             "worst_case": row}, 0.1, ["pgd5", "autoattack"])
    assert tracker.tags == {"eval/autoattack_version": "pyautoattack standard"}
    assert set(tracker.metrics) == {"eval/pgd5_acc", "eval/autoattack_acc",
                                    "eval/autoattack.apgd-ce_acc", "eval/worst_case_acc"}
    tracker = _Tracker()
    log_evaluation(tracker, {"pgd5": row, "worst_case": row}, 0.1, ["pgd5"])
    assert tracker.tags == {}


def test_worst_case_on_hand_made_results():
    t, f = True, False
    masks = {"pgd20": torch.tensor([t, t, f, t, t]), "cw20": torch.tensor([t, f, t, t, t]),
             "autoattack": torch.tensor([t, t, t, f, t])}
    assert worst_case(masks).tolist() == [t, f, f, f, t]
    assert worst_case({"clean": torch.tensor([t, f])}).tolist() == [t, f]
    before = masks["pgd20"].clone()
    worst_case(masks)
    assert torch.equal(masks["pgd20"], before)  # inputs untouched
    with pytest.raises(ValueError, match="at least one"):
        worst_case({})


def test_evaluate_worst_case_and_transfer(digits_model, digits_tensors, one_thread):
    _, _, x, y = digits_tensors
    x, y, threat = x[:64], y[:64], make_geometry("linf")
    masks: dict[str, torch.Tensor] = {}
    res = evaluate(digits_model, x, y, ["clean", "fgsm", "pgd5", "transfer_pgd5"], threat, 0.1,
                   32, torch.Generator().manual_seed(0), surrogate=digits_model, masks=masks)
    expected = (masks["clean"] & masks["fgsm"] & masks["pgd5"] & masks["transfer_pgd5"])
    assert res["worst_case"]["acc"] == pytest.approx(expected.float().mean().item())
    assert res["worst_case"]["acc"] < min(res[k]["acc"] for k in ("clean", "fgsm")) + 1e-9
    with pytest.raises(ValueError, match="surrogate"):
        evaluate(digits_model, x, y, ["transfer_pgd5"], threat, 0.1)


class _Blind(torch.nn.Module):
    """A surrogate whose logits do not depend on the input: its gradients are zero."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return self.bias.expand(x.shape[0], 10) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_transfer_attacks_are_crafted_on_the_surrogate(digits_model, digits_tensors, one_thread):
    _, _, x, y = digits_tensors
    x, y, threat = x[:64], y[:64], make_geometry("linf")

    def masks_of(attacks, **kw):
        masks: dict[str, torch.Tensor] = {}
        evaluate(digits_model, x, y, attacks, threat, 0.1, 32,
                 torch.Generator().manual_seed(0), masks=masks, **kw)
        return masks

    white = masks_of(["pgd5"])["pgd5"]
    # the model as its own surrogate, same random starts: exactly the white-box attack
    assert torch.equal(masks_of(["transfer_pgd5"], surrogate=digits_model)["transfer_pgd5"],
                       white)
    # a surrogate without gradients: sign(0) = 0, so only the random start is left
    blind = masks_of(["transfer_pgd5"], surrogate=_Blind())["transfer_pgd5"]
    g = torch.Generator().manual_seed(0)
    starts = torch.cat([threat.random_delta(x[i:i + 32], 0.1, g) + x[i:i + 32]
                        for i in range(0, 64, 32)])
    with torch.no_grad():
        assert torch.equal(blind, digits_model(starts).argmax(1) == y)
    assert blind.sum() > white.sum()


def test_cli_logs_metrics_table_and_checks(tmp_path, tracking_uri, monkeypatch, capsys,
                                          one_thread):
    from learned_at.runners.cotrain import cotrain

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    ck = f"checkpoint_dir={tmp_path}/ck"
    run_id = cotrain(["policy=pgd_at", "epochs=1", "batch_size=128", "data.train_subset=256",
                      "policy.steps=1", "tracking.log_model=false", "tracking.system_metrics=false",
                      "eval.test_subset=32", "eval.final_pgd_steps=1", "progress=false", ck],
                     tracking_uri)
    assert run_command(main, [f"run_id={run_id}", "attacks=[pgd]", ck]) == 2
    assert "unknown attack 'pgd'" in capsys.readouterr().err
    client = MlflowClient(tracking_uri)
    before = client.get_run(run_id)
    assert run_command(main, [f"run_id={run_id}", "attacks=[clean,pgd3,pgd3x2,transfer_fgsm]",
                 f"surrogate={run_id}", "n_examples=32", "checks=true", "square_queries=0",
                 "check_attack=pgd3", "progress=false", ck]) == 0
    out = capsys.readouterr().out
    assert "| pgd3x2 | 0.2 | 32 |" in out and "check eps_monotone" in out
    # the training run is untouched: one final evaluation point, the same status and end time
    run = client.get_run(run_id)
    assert [h.step for h in client.get_metric_history(run_id, "eval/clean_acc")] == [1]
    assert "eval/pgd3x2_acc" not in run.data.metrics
    assert (run.info.status, run.info.end_time) == (before.info.status, before.info.end_time)
    # the evaluation is a run nested under it
    eval_id = next(line.split("=", 1)[1] for line in out.splitlines()
                   if line.startswith("evaluation_run_id="))
    child = client.get_run(eval_id)
    assert child.data.tags["mlflow.parentRunId"] == run_id
    assert child.data.tags["kind"] == "evaluation" and child.data.tags["checkpoint_epoch"] == "1"
    assert child.data.params["attacks"] == "clean,pgd3,pgd3x2,transfer_fgsm"
    m = child.data.metrics
    for key in ("eval/clean_acc", "eval/pgd3_acc", "eval/pgd3x2_acc", "eval/transfer_fgsm_acc",
                "eval/worst_case_acc", "check/eps_monotone", "check/large_eps"):
        assert key in m, key
    assert m["eval/worst_case_acc"] <= m["eval/pgd3x2_acc"] <= m["eval/clean_acc"]
    assert child.data.tags["check/eps_monotone"].startswith(("PASS: ", "FAIL: "))
    tables = [a.path for a in client.list_artifacts(eval_id, "eval")]
    assert any(p.endswith(".md") for p in tables) and "eval/checks.json" in tables
    rows = json.load(open(client.download_artifacts(
        eval_id, next(p for p in tables if p.startswith("eval/table_") and p.endswith(".json")))))
    assert [r["attack"] for r in rows["rows"]] == ["clean", "pgd3", "pgd3x2", "transfer_fgsm",
                                                   "worst_case"]
    assert all(r["n"] == 32 and r["eps"] == pytest.approx(0.2) for r in rows["rows"])
    # runners.compare reads the evaluation over the run's own final numbers
    from learned_at.runners.compare import main as compare

    assert run_command(compare, [f"run_ids=[{run_id}]", f"tracking_uri={tracking_uri}",
                                 "pgd=pgd3x2"]) == 0
    line = capsys.readouterr().out.splitlines()[2]
    assert f"| {100 * m['eval/pgd3x2_acc']:.2f} |" in line
    assert f"| {100 * m['eval/clean_acc']:.2f} |" in line
