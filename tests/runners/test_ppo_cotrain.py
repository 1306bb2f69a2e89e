"""policy=ppo_strategy end to end: metrics, distributions, ppo/* values and an exact resume."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from learned_at.runners.cotrain import cotrain
from learned_at.runners.run_loading import load_run_state
from tests.runners.conftest import interrupt_and_resume

TINY = ["policy=ppo_strategy", "data.train_subset=192", "batch_size=64", "epochs=2",
        "policy.n_steps=2", "policy.minibatch_size=64", "policy.n_epochs=2",
        "policy.steps_grid=[1,2]", "eval.test_subset=32", "eval.final_pgd_steps=2",
        "data.test_subset=64", "progress=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _check_metrics(tracking_uri: str, run_id: str) -> None:
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    m = run.data.metrics
    for key in ("policy/eps_mean", "policy/alpha_p50", "policy/steps_mean", "policy/reward",
                "policy/reward_loss", "ppo/approx_kl", "ppo/value_loss", "ppo/entropy_loss",
                "ppo/clip_fraction", "ppo/updates", "eval/clean_acc", "eval/pgd2_acc",
                "time/epoch_s"):
        assert key in m, key
    assert 1.0 <= m["policy/steps_mean"] <= 2.0  # the K grid is [1, 2]
    # 3 batches per epoch, an update every 2: epochs see 1 and 2 updates (the rollout spans them)
    assert [h.value for h in client.get_metric_history(run_id, "ppo/updates")] == [1.0, 2.0]
    assert run.data.params["policy.name"] == "ppo_strategy"
    dist = {a.path for a in client.list_artifacts(run_id, "distributions")}
    assert {"distributions/eps.json", "distributions/alpha.json",
            "distributions/steps.json"} <= dist
    assert any(a.path.endswith("eps_heatmap.png") for a in client.list_artifacts(run_id, "plots"))


def test_ppo_strategy_run_logs_its_metrics_and_resumes_exactly(tmp_path, tracking_uri,
                                                               monkeypatch):
    """Two epochs of 3 batches with an update every 2: the checkpoint after epoch 1 holds a
    partial rollout, so the exact resume also covers the rollout buffer and PPO's counters."""
    args = [*TINY, f"checkpoint_dir={tmp_path}/ck"]
    full_id = cotrain(args, tracking_uri)
    _check_metrics(tracking_uri, full_id)
    cut_id = interrupt_and_resume(args, tracking_uri, f"{tmp_path}/ck", monkeypatch)
    client = MlflowClient(tracking_uri)
    full = client.get_run(full_id).data.metrics
    cut = client.get_run(cut_id).data.metrics
    for key in ("eval/clean_acc", "train/loss", "policy/eps_mean", "ppo/approx_kl"):
        assert cut[key] == full[key], key
    a = load_run_state(full_id, f"{tmp_path}/ck")["policy"]
    b = load_run_state(cut_id, f"{tmp_path}/ck")["policy"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sb3_drives_the_runners_own_train_step(tmp_path):
    """``learn_with_sb3`` over a real run: SB3 chooses, :func:`runners.train.train_step` does
    the rest (distributions, target step, rewards) on every batch."""
    from learned_at.agents.ppo.vec_env import learn_with_sb3
    from learned_at.runners.compose import compose_config
    from learned_at.runners.run import build_run
    from learned_at.runners.train import sb3_driven

    run = build_run(compose_config([*TINY, f"checkpoint_dir={tmp_path}/ck"]))
    before = [p.detach().clone() for p in run.target.model.parameters()]
    env = learn_with_sb3(sb3_driven(run), total_batches=4)  # 3 batches per pass
    assert env.epoch == 1 and run.policy.ppo.num_timesteps == 4 * 64
    assert any(not torch.equal(a, b) for a, b in zip(before, run.target.model.parameters()))
    run.distributions.end_epoch(0)
    assert run.distributions.history("eps")[0]["n"] == 4 * 64  # every batch was tracked
