"""Final metrics of two tiny co-trainings recorded before the episode/geometry/Target refactor
(seed 0, one thread, torch 2.13 CPU): the computation did not change, so neither do they.

LAS-AT's digits preset has changed since (label smoothing 0.7, the learning rule); the overrides
below select the preset of the recording, which must still reproduce it exactly."""

import pytest
from mlflow.tracking import MlflowClient

from learned_at.runners.cotrain import cotrain

TINY = ["epochs=2", "batch_size=128", "eval.test_subset=64", "eval.final_pgd_steps=3",
        "progress=false", "tracking.log_model=false", "tracking.system_metrics=false"]
RECORDED = {  # policy overrides -> (eval/clean_acc, eval/pgd3_acc, last train/loss)
    "pgd_at": (["policy=pgd_at", "policy.steps=2"], 0.3583333194255829, 0.1805555522441864,
               2.2850847244262695),
    "las_at": (["policy=las_at", "policy.true_class_prob=1.0", "policy.reward_mode=batch",
                "policy.baseline=none", "policy.lr=0.05", "policy.interval=4"],
               0.4583333432674408, 0.20555555820465088, 2.2988946437835693),
}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_metrics_equal_those_recorded_before_the_refactor(name, tmp_path, tracking_uri):
    extra, clean, pgd, loss = RECORDED[name]
    run_id = cotrain([*TINY, *extra, f"checkpoint_dir={tmp_path}/ck"], tracking_uri)
    run = MlflowClient(tracking_uri).get_run(run_id)
    m = run.data.metrics
    if name == "las_at":  # the presets the policy resolved are logged, never "None"
        assert run.data.params["resolved.policy.eps_grid"].startswith("[")
        assert "None" not in run.data.params.values()
    assert m["eval/clean_acc"] == pytest.approx(clean, abs=1e-6)
    assert m["eval/pgd3_acc"] == pytest.approx(pgd, abs=1e-6)
    assert m["train/loss"] == pytest.approx(loss, rel=1e-5)
