"""The sparse track through the runners: attack names, evaluation with Sparse-AutoAttack, the L0
masking checks, Fast-LS-ℓ0 co-training tracked in MLflow, exact resume with soft labels."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from learned_at.envs.geometry import make_geometry
from learned_at.runners.masking_checks import CheckConfig, run_masking_checks
from learned_at.envs.attacks.sparse import SparseAutoAttack, SparsePGDProjected, SparseRS
from learned_at.runners.robustness import evaluate, parse_attack
from learned_at.runners.run_loading import load_run_state
from tests.runners.conftest import interrupt_and_resume
from tests.helpers import run_command

pytestmark = pytest.mark.usefixtures("one_thread")

L0_TINY = ["threat=l0", "threat.k=4", "batch_size=128", "data.train_subset=256",
           "eval.test_subset=48", "monitor.test_subset=48", "eval.final_pgd_steps=3",
           "progress=false"]


def test_sparse_attack_names_and_defaults():
    l0, linf = make_geometry("l0"), make_geometry("linf")
    assert parse_attack("spgd_p", l0) == SparsePGDProjected("spgd_p", 300)
    assert parse_attack("spgd_u50", l0).steps == 50
    assert parse_attack("sparse_rs", l0) == SparseRS("sparse_rs", 10_000)
    assert parse_attack("sparse_autoattack", l0) == SparseAutoAttack("sparse_autoattack", 300,
                                                                     10_000)
    saa = parse_attack("sparse_autoattack20x500", l0)
    assert (saa.steps, saa.queries) == (20, 500)
    assert parse_attack("transfer_pgd20", l0).source == parse_attack("pgd20")
    for bad in ("spgd_p3x2", "sparse_rs10x2", "transfer_spgd_p"):
        with pytest.raises(ValueError, match="valid: clean"):
            parse_attack(bad)
    for name in ("autoattack", "square", "cw20", "transfer_cw20"):
        with pytest.raises(ValueError, match="does not apply to threat=l0; its attacks: clean"):
            parse_attack(name, l0)
    with pytest.raises(ValueError, match="does not apply to threat=linf"):
        parse_attack("sparse_autoattack", linf)


def test_evaluate_reports_saa_stages_and_its_worst_case(digits_model, digits_tensors):
    _, _, x, y = digits_tensors
    x, y, l0 = x[:48], y[:48], make_geometry("l0")
    masks: dict[str, torch.Tensor] = {}
    attacks = ["clean", "spgd_p10", "sparse_rs60", "sparse_autoattack10x60"]
    res = evaluate(digits_model, x, y, attacks, l0, 2, 48, torch.Generator().manual_seed(0),
                   masks=masks)
    stages = [res[f"sparse_autoattack10x60.{s}"]["acc"] for s in ("spgd_p", "spgd_u",
                                                                    "sparse_rs")]
    assert stages == sorted(stages, reverse=True)
    assert res["sparse_autoattack10x60"]["acc"] == pytest.approx(stages[-1])
    assert torch.all(masks["sparse_autoattack10x60"] <= masks["clean"])
    assert res["worst_case"]["acc"] <= min(res[a]["acc"] for a in attacks) + 1e-9


def test_l0_masking_checks_use_whole_pixels_sparse_rs_and_saa(digits_model, digits_tensors):
    _, _, x, y = digits_tensors
    x, y, l0 = x[:48], y[:48], make_geometry("l0")
    res = evaluate(digits_model, x, y, ["clean", "pgd5", "sparse_autoattack5x40"], l0, 4, 48,
                   torch.Generator().manual_seed(0))
    checks = {c.name: c for c in run_masking_checks(
        digits_model, x, y, l0, 4, res, config=CheckConfig(attack="pgd5", square_queries=40),
        batch_size=48)}
    budgets = sorted(float(k.rsplit("_", 1)[1]) for k in checks["eps_monotone"].numbers)
    assert budgets == [0, 1, 2, 4, 64] and "k=" in checks["eps_monotone"].detail
    assert checks["large_eps"].status == "pass"  # every pixel free: the image can be erased
    assert checks["autoattack_le_pgd"].status == "pass"
    assert "sparse_autoattack5x40" in checks["autoattack_le_pgd"].detail
    assert "sparse_rs40" in checks["blackbox_ge_whitebox"].detail


def test_fast_ls_l0_cotrains_tracked_and_evaluates(tmp_path, tracking_uri, monkeypatch, capsys):
    from learned_at.runners.cotrain import cotrain
    from learned_at.runners.evaluate import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    ck = f"checkpoint_dir={tmp_path}/ck"
    run_id = cotrain([*L0_TINY, "policy=fast_ls_l0", "epochs=1", ck], tracking_uri)
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.data.params["at_loss.name"] == "trades"
    assert run.data.params["at_loss.soft_labels.enabled"] == "True"
    assert run.data.params["threat.k"] == "4" and run.data.tags["threat"] == "l0"
    for key in ("test/pgd_acc", "monitor/test_fgsm_acc", "policy/pixels_mean", "eval/pgd3_acc"):
        assert key in run.data.metrics, key
    assert run_command(main, [f"run_id={run_id}", "attacks=[clean,sparse_autoattack5x30]", "n_examples=24",
                 "checks=true", "check_attack=pgd3", "square_queries=30", "progress=false",
                 ck]) == 0
    out = capsys.readouterr().out
    assert "sparse_autoattack5x30" in out and "check autoattack_le_pgd" in out
    eval_id = next(line.split("=", 1)[1] for line in out.splitlines()
                   if line.startswith("evaluation_run_id="))  # the nested evaluation run
    m = MlflowClient(tracking_uri).get_run(eval_id).data.metrics
    for key in ("eval/sparse_autoattack5x30_acc", "eval/sparse_autoattack5x30.sparse_rs_acc",
                "check/eps_monotone", "check/blackbox_ge_whitebox"):
        assert key in m, key


@pytest.mark.slow
def test_las_at_under_l0_logs_chosen_k_distributions(tmp_path, tracking_uri):
    from learned_at.runners.cotrain import cotrain

    run_id = cotrain([*L0_TINY, "policy=las_at", "epochs=1", "monitor.enabled=false",
                      f"checkpoint_dir={tmp_path}/ck"], tracking_uri)
    client = MlflowClient(tracking_uri)
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert "plots/eps_heatmap.png" in plots
    assert 2.0 <= client.get_run(run_id).data.metrics["policy/eps_mean"] <= 6.0


def test_resume_with_soft_labels_is_exact(tmp_path, tracking_uri, monkeypatch):
    args = [*L0_TINY, "policy=fast_ls_l0", "epochs=2", "at_loss.soft_labels.warmup_epochs=0",
            "monitor.enabled=false", f"checkpoint_dir={tmp_path}/ck"]
    full_id = cotrain_run(args, tracking_uri)
    cut_id = interrupt_and_resume(args, tracking_uri, f"{tmp_path}/ck", monkeypatch)
    full = load_run_state(full_id, f"{tmp_path}/ck")
    cut = load_run_state(cut_id, f"{tmp_path}/ck")
    sl_full, sl_cut = full["at_loss"]["soft_labels"], cut["at_loss"]["soft_labels"]
    assert sl_full["seen"].any() and sl_full["steps"] == sl_cut["steps"] == 4
    assert torch.equal(sl_full["memory"], sl_cut["memory"])
    for k in full["model"]:
        assert torch.equal(full["model"][k], cut["model"][k]), k
    a = MlflowClient(tracking_uri).get_run(full_id).data.metrics
    b = MlflowClient(tracking_uri).get_run(cut_id).data.metrics
    for key in ("train/loss", "test/pgd_acc", "eval/pgd3_acc"):
        assert a[key] == b[key], key


def cotrain_run(args: list[str], tracking_uri: str) -> str:
    from learned_at.runners.cotrain import cotrain

    return cotrain(args, tracking_uri)
