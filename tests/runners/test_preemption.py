"""No run lost or garbled: mid-epoch resume per stateful policy, a stop during evaluation, a
failed checkpoint write, NaN in the loss, and ``resume=<id> epochs=N``."""

from __future__ import annotations

import errno
import signal

import pytest
import torch
from mlflow.tracking import MlflowClient

from learned_at.runners import train
from learned_at.runners.config import ConfigError
from learned_at.runners.cotrain import cotrain, main
from learned_at.runners.train import NonFiniteError
from tests.helpers import run_command
from learned_at.runners.preemption import RunInterrupted
from tests.runners.conftest import (TINY_RUN, assert_same_training, final_state,
                                    metric_histories, sigterm_after_step)

pytestmark = pytest.mark.usefixtures("one_thread")


def _only_run(uri: str) -> str:
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("learned-at").experiment_id],
                              order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id


def _sigterm_during_first_evaluation(monkeypatch) -> None:
    original = train.evaluate_epoch

    def evaluate_epoch(run):
        signal.raise_signal(signal.SIGTERM)  # stops the evaluation at once
        return original(run)

    monkeypatch.setattr(train, "evaluate_epoch", evaluate_epoch)


#: PGI's per-sample memories (reset by begin_epoch at epoch 0) and PPO's rollout buffer (3
#: batches per rollout, so it spans the cut) and its per-epoch update records
POLICIES = {
    "fgsm_pgi": (["policy=fgsm_pgi"], "batch", (0, 2)),
    "ppo_strategy": (["policy=ppo_strategy", "policy.n_steps=3", "policy.minibatch_size=64",
                      "policy.n_epochs=1", "policy.steps_grid=[1,2]"], "evaluation", (0, 4)),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_stateful_policies_resume_exactly_mid_epoch(name, tmp_path, tracking_uri, monkeypatch,
                                                    reference_run):
    extra, when, position = POLICIES[name]
    args = [*TINY_RUN, *extra]
    ref_uri, ref_id, ref_ck = reference_run(args)
    ck = str(tmp_path / "ck")
    if when == "batch":
        sigterm_after_step(monkeypatch, 1)
    else:
        _sigterm_during_first_evaluation(monkeypatch)
    with pytest.raises(RunInterrupted):
        cotrain([*args, f"checkpoint_dir={ck}"], tracking_uri)
    monkeypatch.undo()
    run_id = _only_run(tracking_uri)
    state = final_state(run_id, ck)
    assert (state["epoch"], state["batch"]) == position
    cotrain([f"resume={run_id}", f"checkpoint_dir={ck}"], tracking_uri)
    assert_same_training(final_state(run_id, ck), final_state(ref_id, ref_ck))
    assert metric_histories(tracking_uri, run_id) == metric_histories(ref_uri, ref_id)


#: a constant learning rate and a policy without a schedule: 1 epoch + 1 more = 2 epochs
PLAIN = [*TINY_RUN, "policy=pgd_at", "policy.steps=2", "optim.schedule=constant"]


def test_failed_checkpoint_write_keeps_the_previous_one_and_the_run_resumable(
        tmp_path, tracking_uri, monkeypatch, reference_run):
    ref_uri, ref_id, ref_ck = reference_run(PLAIN)
    ck = tmp_path / "ck"
    import learned_at.runners.checkpoint as checkpoint

    real_save = torch.save
    calls = {"n": 0}

    def disk_full(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:  # the end of epoch 1 is written
            return real_save(obj, handle, *args, **kwargs)
        handle.write(b"half a checkpoint")  # then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    sigterm_after_step(monkeypatch, 5)  # epoch 2, batch 2: its checkpoint fails
    with pytest.raises(RunInterrupted):
        cotrain([*PLAIN, f"checkpoint_dir={ck}"], tracking_uri)
    monkeypatch.undo()
    run_id = _only_run(tracking_uri)
    state = final_state(run_id, str(ck))  # the previous checkpoint, intact and loadable
    assert (state["epoch"], state["batch"]) == (1, 0)
    assert [p.name for p in (ck / run_id).iterdir()] == ["last.pt"]  # no temporary left
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.info.status == "KILLED"
    assert "No space left on device" in run.data.tags["checkpoint_error"]
    assert "end of epoch 1" in run.data.tags["checkpoint_error"]

    cotrain([f"resume={run_id}", f"checkpoint_dir={ck}"], tracking_uri)
    assert_same_training(final_state(run_id, str(ck)), final_state(ref_id, ref_ck))
    assert metric_histories(tracking_uri, run_id) == metric_histories(ref_uri, ref_id)


def test_nan_loss_stops_the_run_naming_the_batch_and_the_last_good_checkpoint(
        tmp_path, tracking_uri, monkeypatch, capsys):
    original = train.train_step

    def train_step(run, b, epoch, step):
        stats, pm = original(run, b, epoch, step)
        if step >= 5:  # from epoch 2, batch 2 on
            stats["train/loss"] = stats["train/loss"] * float("nan")
        return stats, pm

    monkeypatch.setattr(train, "train_step", train_step)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    ck = tmp_path / "ck"
    assert run_command(main, [*PLAIN, f"checkpoint_dir={ck}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the epoch-1 summary: one line, the reason
    assert last.startswith("runners.cotrain: non-finite loss or policy value")
    assert "epoch 2, batch 2 (global step 5)" in last
    assert f"last good checkpoint {ck}" in last and "(end of epoch 1)" in last
    run_id = _only_run(tracking_uri)
    assert final_state(run_id, str(ck))["epoch"] == 1  # nothing non-finite was checkpointed
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.info.status == "FAILED" and "NaN" in run.data.tags["failure"]
    with pytest.raises(NonFiniteError):  # the same through the library call
        cotrain([*PLAIN, f"checkpoint_dir={ck}"], tracking_uri)


def test_resume_with_epochs_extends_a_finished_run(tmp_path, tracking_uri, reference_run):
    ref_uri, ref_id, ref_ck = reference_run(PLAIN)
    ck = f"checkpoint_dir={tmp_path}/ck"
    run_id = cotrain([*(a for a in PLAIN if a != "epochs=2"), "epochs=1", ck], tracking_uri)
    with pytest.raises(ConfigError, match=f"run {run_id} finished its 1 epochs; resume=.* "
                                          "epochs=N \\(N > 1\\) extends it"):
        cotrain([f"resume={run_id}", ck], tracking_uri)
    with pytest.raises(ConfigError, match="policy.steps=3 differs from the run's policy.steps=2"):
        cotrain([f"resume={run_id}", "policy.steps=3", ck], tracking_uri)
    # the run's own values are accepted: the original command line with resume= added
    with pytest.raises(ConfigError, match="finished its 1 epochs"):
        cotrain([f"resume={run_id}", *(a for a in PLAIN if a != "epochs=2"), "epochs=1", ck],
                tracking_uri)
    assert cotrain([f"resume={run_id}", "epochs=2", ck], tracking_uri) == run_id

    # the same weights as a run planned for 2 epochs (constant schedule)
    assert_same_training(final_state(run_id, f"{tmp_path}/ck"), final_state(ref_id, ref_ck))
    mine, ref = metric_histories(tracking_uri, run_id), metric_histories(ref_uri, ref_id)
    assert mine["train/loss"] == ref["train/loss"]
    # the final evaluation once per step: after epoch 1 (the first plan), after epoch 2
    assert [s for s, _ in mine["eval/clean_acc"]] == [1, 2]
    assert mine["eval/clean_acc"][1] == ref["eval/clean_acc"][0]
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.data.tags["epochs_replanned"] == "1->2" and run.info.status == "FINISHED"
    with pytest.raises(ConfigError, match="accepted epochs >= 2"):
        cotrain([f"resume={run_id}", "epochs=1", ck], tracking_uri)
