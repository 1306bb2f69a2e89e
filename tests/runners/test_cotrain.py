"""Tiny end-to-end co-training runs: documented metrics in MLflow, exact resume, run_id line."""

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from learned_at.runners.cotrain import cotrain, main
from learned_at.runners.preemption import RunInterrupted
from learned_at.runners.run_store import source_tags
from learned_at.runners.tracking import Tracker
from tests.helpers import run_command
from tests.runners.conftest import (TINY_RUN, assert_same_training, final_state,
                                    interrupt_and_resume, metric_histories, sigterm_after_step)

TINY = ["epochs=2", "batch_size=128", "data.train_subset=512", "policy=pgd_at", "policy.steps=2",
        "eval.test_subset=64", "eval.final_pgd_steps=3", "progress=false"]

DOCUMENTED = ["train/loss", "train/clean_acc", "train/adv_acc", "test/clean_acc", "test/pgd_acc",
              "time/epoch_s", "time/train_images_per_s", "eval/clean_acc", "eval/pgd3_acc",
              "policy/eps_mean", "policy/steps_mean", "policy/steps_p50"]


def _metrics(uri, run_id):
    return MlflowClient(uri).get_run(run_id).data.metrics


def test_tiny_run_logs_documented_metrics(tmp_path, tracking_uri, caplog, capsys, monkeypatch):
    caplog.set_level(logging.INFO, logger="learned_at.runners.train")
    run_id = cotrain([*TINY, f"checkpoint_dir={tmp_path}/ck", "tracking.register_as=digits-test",
                      "tracking.system_metrics_interval_s=0.5"], tracking_uri)
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    missing = [k for k in DOCUMENTED if k not in run.data.metrics]
    assert not missing, missing
    assert run.data.tags["policy"] == "pgd_at" and run.data.tags["data"] == "digits"
    params = run.data.params  # the resolved config: every preset filled in
    assert params["policy.steps"] == "2" and params["threat.eps"] == "0.2"
    assert params["target.name"] == "digits_cnn" and params["epochs"] == "2"
    assert "None" not in params.values() and "monitor.train_subset" in params
    assert run.info.status == "FINISHED"
    assert run.data.metrics["policy/steps_mean"] == 2.0
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert "checkpoints/last.pt" in artifacts
    assert {a.path for a in client.list_artifacts(run_id, "distributions")} >= {
        "distributions/eps.json", "distributions/steps.json"}
    assert client.list_artifacts(run_id, "plots") == []  # pgd_at's ε and K never change
    # per-epoch summaries through logging, progress bars off
    summaries = [r.getMessage() for r in caplog.records if r.name == "learned_at.runners.train"]
    assert [s.split("  ")[0] for s in summaries[:2]] == ["epoch 1/2", "epoch 2/2"]
    # what mlflow.start_run records, in a model-training experiment
    tags = run.data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.name"]
    if source_tags():  # a git checkout
        assert len(tags["mlflow.source.git.commit"]) == 40
        assert tags["git.dirty"] in ("true", "false")
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert any(k.startswith("system/") for k in run.data.metrics)  # system metrics, on by default
    resolved = yaml.safe_load(open(client.download_artifacts(run_id, "config/resolved.yaml")))
    assert (resolved["target"]["name"], resolved["threat"]["eps"], resolved["epochs"]) == \
        ("digits_cnn", 0.2, 2)
    assert run.info.run_name.startswith("pgd_at-digits-digits_cnn epochs=2 batch_size=128 ")
    assert "policy.steps=2" in run.info.run_name and run.info.run_name.endswith("seed=0")
    # the final target as an MLflow model (the Models tab), loadable and registered
    assert len(run.outputs.model_outputs) == 1
    import mlflow.pytorch

    mlflow.set_tracking_uri(tracking_uri)
    logged = mlflow.pytorch.load_model(tags["model_uri"])
    registered = mlflow.pytorch.load_model("models:/digits-test/1")
    # the model belongs to the run's own experiment (its Models tab), not to "Default"
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         output_format="list")
    assert [m.source_run_id for m in models] == [run_id]
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(logged(x), registered(x)) and logged(x).shape == (3, 10)

    # a second run (another seed) from the CLI: its own name, tables that load with the first
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    capsys.readouterr()
    assert run_command(main, [*TINY, "epochs=1", "seed=1", f"checkpoint_dir={tmp_path}/ck",
                              "tracking.log_model=false", "tracking.system_metrics=false"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("run_id=") and len(last) > len("run_id=") + 10
    other = client.get_run(last.split("=", 1)[1])
    assert other.info.run_name.endswith("seed=1") and other.info.run_name != run.info.run_name
    table = client.load_table(run.info.experiment_id, "distributions/eps.json",
                              run_ids=[run_id, other.info.run_id], extra_columns=["run_id"])
    assert set(table["run_id"]) == {run_id, other.info.run_id}
    assert list(table["value"]) == pytest.approx([0.2] * 3) and set(table["fraction"]) == {1.0}


def test_bad_input_exits_with_message_not_traceback(tmp_path, capsys, tracking_uri, monkeypatch):
    assert run_command(main, ["policy=nope"]) == 2
    assert "valid:" in capsys.readouterr().err
    assert run_command(main, ["data=mnist", f"data.root={tmp_path}/none"]) == 2
    assert "t10k-images-idx3-ubyte" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    with Tracker("learned-at", tracking_uri=tracking_uri) as tracker:  # a run, a broken file
        pass
    (tmp_path / "ck" / tracker.run_id).mkdir(parents=True)
    (tmp_path / "ck" / tracker.run_id / "last.pt").write_bytes(b"garbage")
    assert run_command(main, [f"resume={tracker.run_id}", f"checkpoint_dir={tmp_path}/ck"]) == 2
    assert "corrupt" in capsys.readouterr().err


KILL_AT_CHECKPOINT = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from learned_at.runners.checkpoint import Checkpointer
from learned_at.runners.cotrain import cotrain
original = Checkpointer.save
def save(self, state, epoch, batch=0):
    written = original(self, state, epoch, batch)
    if (epoch, batch) == (1, 2):  # right after the checkpoint at epoch 2, batch 2
        os.kill(os.getpid(), signal.SIGKILL)
    return written
Checkpointer.save = save
cotrain(sys.argv[2:], sys.argv[1])
"""

#: LAS-AT learning every 3rd batch: its counters, optimiser and entropy sums cross the cut
RESUMED = [*TINY_RUN, "policy=las_at", "policy.interval=3"]


def _interrupt(kind, tracking_uri, ck, monkeypatch):
    """Interrupt a run of RESUMED (``kind``), check how it ended, return its id."""
    args = [*RESUMED, f"checkpoint_dir={ck}"]
    client = MlflowClient(tracking_uri)
    if kind == "keyboard_interrupt_at_epoch_2":
        return interrupt_and_resume(args, tracking_uri, ck, monkeypatch, resume=False)
    if kind == "sigterm_mid_epoch":
        sigterm_after_step(monkeypatch, 5)  # epoch 2, batch 2 (4 batches per epoch)
        with pytest.raises(RunInterrupted):
            cotrain(args, tracking_uri)
        monkeypatch.undo()
        run = client.search_runs([client.get_experiment_by_name("learned-at").experiment_id])[0]
        assert run.info.status == "KILLED"
        assert run.data.tags["resume_command"] == \
            f"python -m runners.cotrain resume={run.info.run_id} checkpoint_dir={ck}"
        return run.info.run_id
    # kill -9 of a process right after its mid-epoch checkpoint (checkpoints every batch)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", KILL_AT_CHECKPOINT, tracking_uri, *args,
                           "checkpoint_every_s=0.000001"], cwd=os.getcwd(),
                          env={**os.environ, "PYTHONPATH": str(root), "MPLBACKEND": "Agg"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run = client.search_runs([client.get_experiment_by_name("learned-at").experiment_id])[0]
    assert run.info.status == "RUNNING"  # nothing could mark it: the checkpoint is what counts
    return run.info.run_id


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kind", ["keyboard_interrupt_at_epoch_2", "sigterm_mid_epoch",
                                  "kill9_mid_epoch"])
def test_interrupted_then_resumed_run_matches_uninterrupted(kind, tmp_path, tracking_uri,
                                                            monkeypatch, reference_run):
    ref_uri, ref_id, ref_ck = reference_run(RESUMED)
    ck = str(tmp_path / "ck")
    cut_id = _interrupt(kind, tracking_uri, ck, monkeypatch)
    position = final_state(cut_id, ck)
    expected = {"keyboard_interrupt_at_epoch_2": (1, 0), "sigterm_mid_epoch": (1, 2),
                "kill9_mid_epoch": (1, 2)}[kind]
    assert (position["epoch"], position["batch"]) == expected
    assert cotrain([f"resume={cut_id}", f"checkpoint_dir={ck}"], tracking_uri) == cut_id

    assert_same_training(final_state(cut_id, ck), final_state(ref_id, ref_ck))
    # every metric, at every step, once: the resumed epoch is exact to the bit
    assert metric_histories(tracking_uri, cut_id) == metric_histories(ref_uri, ref_id)
    assert MlflowClient(tracking_uri).get_run(cut_id).info.status == "FINISHED"
