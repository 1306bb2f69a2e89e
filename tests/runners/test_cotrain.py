"""Tiny end-to-end co-training runs: documented metrics in MLflow, exact resume, run_id line."""

import torch
from mlflow.tracking import MlflowClient

from runners.cotrain import cotrain, main
from runners.run_loading import load_run_state
from tests.runners.conftest import interrupt_and_resume

TINY = ["epochs=2", "batch_size=128", "policy=pgd_at", "policy.steps=2", "eval.test_subset=64",
        "eval.final_pgd_steps=3", "progress=false"]

DOCUMENTED = ["train/loss", "train/clean_acc", "train/adv_acc", "test/clean_acc", "test/pgd_acc",
              "time/epoch_s", "time/train_images_per_s", "eval/clean_acc", "eval/pgd3_acc",
              "policy/eps_mean", "policy/steps_mean", "policy/steps_p50"]


def _metrics(uri, run_id):
    return MlflowClient(uri).get_run(run_id).data.metrics


def test_tiny_run_logs_documented_metrics(tmp_path, tracking_uri, capsys):
    run_id = cotrain([*TINY, f"checkpoint_dir={tmp_path}/ck"], tracking_uri)
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    missing = [k for k in DOCUMENTED if k not in run.data.metrics]
    assert not missing, missing
    assert run.data.tags["policy"] == "pgd_at" and run.data.tags["data"] == "digits"
    assert run.data.params["policy.steps"] == "2" and run.data.params["resolved.eps"] == "0.2"
    assert run.info.status == "FINISHED"
    assert run.data.metrics["policy/steps_mean"] == 2.0
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert "checkpoints/last.pt" in artifacts
    assert {a.path for a in client.list_artifacts(run_id, "distributions")} >= {
        "distributions/eps.json", "distributions/steps.json"}


def test_main_prints_run_id_last(tmp_path, monkeypatch, capsys, tracking_uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    assert main([*TINY, "epochs=1", f"checkpoint_dir={tmp_path}/ck"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("run_id=") and len(last) > len("run_id=") + 10


def test_bad_input_exits_with_message_not_traceback(tmp_path, capsys):
    assert main(["policy=nope"]) == 2
    assert "valid:" in capsys.readouterr().err
    assert main(["data=mnist", f"data.root={tmp_path}/none"]) == 2
    assert "t10k-images-idx3-ubyte" in capsys.readouterr().err
    (tmp_path / "ck" / "bad").mkdir(parents=True)
    (tmp_path / "ck" / "bad" / "last.pt").write_bytes(b"garbage")
    assert main(["resume=bad", f"checkpoint_dir={tmp_path}/ck"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_interrupted_then_resumed_run_matches_uninterrupted(tmp_path, tracking_uri, monkeypatch):
    args = [*(a for a in TINY if not a.startswith("policy")), "epochs=3", "policy=fgsm_rs",
            f"checkpoint_dir={tmp_path}/ck"]
    full_id = cotrain(args, tracking_uri)
    cut_id = interrupt_and_resume(args, tracking_uri, f"{tmp_path}/ck", monkeypatch)
    assert cut_id != full_id

    full, cut = _metrics(tracking_uri, full_id), _metrics(tracking_uri, cut_id)
    for key in ("eval/clean_acc", "eval/pgd3_acc", "train/loss", "test/pgd_acc"):
        assert cut[key] == full[key], key
    a = load_run_state(full_id, f"{tmp_path}/ck")["model"]
    b = load_run_state(cut_id, f"{tmp_path}/ck")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert MlflowClient(tracking_uri).get_run(cut_id).info.status == "FINISHED"
