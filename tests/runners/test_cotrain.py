"""Tiny end-to-end co-training runs: documented metrics in MLflow, exact resume, run_id line."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runners.cotrain import cotrain, main
from runners.preemption import RunInterrupted
from tests.runners.conftest import (TINY_RUN, assert_same_training, final_state,
                                    interrupt_and_resume, metric_histories, sigterm_after_step)

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


KILL_AT_CHECKPOINT = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from runners.cotrain import Cotrainer, cotrain
original = Cotrainer.save
def save(self, next_epoch, batch=0):
    written = original(self, next_epoch, batch)
    if (next_epoch, batch) == (1, 2):  # right after the checkpoint at epoch 2, batch 2
        os.kill(os.getpid(), signal.SIGKILL)
    return written
Cotrainer.save = save
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
