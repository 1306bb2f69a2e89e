"""The catastrophic-overfitting monitor: the flag's logic, and the hook inside a real run."""

from mlflow.tracking import MlflowClient

from learned_at.runners.co_monitor import detect_co
from learned_at.runners.config import MonitorConfig
from learned_at.runners.cotrain import cotrain


def _flags(pgd, fgsm, config=MonitorConfig()):
    prev, out = (None, None), []
    for p, f in zip(pgd, fgsm):
        out.append(detect_co(p, f, *prev, config))
        prev = (p, f)
    return out


def test_flags_synthetic_collapse():
    # FGSM-RS-like collapse: PGD 0.38 -> 0.02 in one epoch while FGSM jumps to 0.85
    assert _flags([0.30, 0.35, 0.38, 0.02, 0.00], [0.40, 0.44, 0.47, 0.85, 0.90]) == [
        False, False, False, True, True]
    # a drop by more than half (not below the floor) with FGSM high also counts
    assert _flags([0.40, 0.15], [0.50, 0.60]) == [False, True]


def test_does_not_flag_steady_or_degrading_runs():
    assert not any(_flags([0.10, 0.20, 0.28, 0.33, 0.35, 0.36],
                          [0.15, 0.26, 0.35, 0.41, 0.43, 0.45]))
    # a weak model at the start (PGD below the floor, FGSM not much higher) is not CO
    assert not any(_flags([0.02, 0.08], [0.06, 0.12]))
    # a run that degrades against FGSM as well is a different failure, not CO
    assert not any(_flags([0.40, 0.10], [0.50, 0.15]))


def test_monitor_logs_metrics_keeps_best_and_stops_on_co(tmp_path, tracking_uri):
    always_co = ["monitor.floor=1.0", "monitor.min_gap=0.0", "monitor.fgsm_keep=0.0"]
    run_id = cotrain(["policy=fgsm_pgi", "at_loss=pgi", "epochs=3", "batch_size=64",
                      "data.train_subset=256", "data.test_subset=64",
                      "eval.test_subset=64", "eval.final_pgd_steps=1", "progress=false",
                      "monitor.train_subset=64", "monitor.test_subset=64",
                      "monitor.keep_best=true", "monitor.stop_on_co=true", *always_co,
                      f"checkpoint_dir={tmp_path}/ck"], tracking_uri)
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    m = run.data.metrics
    for key in ("monitor/train_pgd_acc", "monitor/test_pgd_acc", "monitor/test_fgsm_acc",
                "train/pgi_reg", "policy/attack_success", "policy/init_norm_mean"):
        assert key in m, key
    assert m["monitor/co"] == 1.0 and m["monitor/test_pgd_acc"] == m["test/pgd_acc"]
    assert [h.step for h in client.get_metric_history(run_id, "monitor/co")] == [0]  # stopped
    assert run.data.tags["co_stopped_epoch"] == "0" and "eval/clean_acc" in m
    assert "checkpoints/best.pt" in {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    # the final and the best target, both MLflow models of the run
    assert len(run.outputs.model_outputs) == 2 and run.data.tags["model_uri"].startswith("models:/")
