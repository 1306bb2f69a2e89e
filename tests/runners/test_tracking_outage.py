"""A tracking server that stops answering mid-run (longer than MLflow's retries) loses no epoch:
the run writes its checkpoint with what was not logged, stops with one line and the resume
command, and ``resume=`` sends that record and completes the run as if nothing had happened.

Here MLflow's request for one batch of metrics fails as it does after its retries (an
``MlflowException`` raised while handling a refused connection) on a sqlite store; the real
server, killed and restarted on its port, is test_team_server.py's (``--integration``).
"""

from __future__ import annotations

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from learned_at.runners.cotrain import cotrain, main
from learned_at.runners.tracking_errors import TrackingUnavailableError
from learned_at.runners.writer_identity import Holder
from tests.helpers import run_command
from tests.runners.conftest import (TINY_RUN, assert_same_training, final_state,
                                    metric_histories)

pytestmark = pytest.mark.usefixtures("one_thread")

PLAIN = [*TINY_RUN, "policy=pgd_at", "policy.steps=2", "optim.schedule=constant"]


def _server_gone_for(monkeypatch, key: str) -> None:
    """The first ``log_batch`` whose metrics include ``key`` fails as after MLflow's retries."""
    original = MlflowClient.log_batch
    failed = []

    def log_batch(self, run_id, metrics=(), *args, **kwargs):
        if not failed and any(m.key == key for m in metrics):
            failed.append(key)
            try:
                raise requests.exceptions.ConnectionError(
                    "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded "
                    "(Caused by NewConnectionError('Failed to establish a new connection: "
                    "[Errno 111] Connection refused'))")
            except requests.exceptions.ConnectionError as error:
                raise MlflowException(f"API request to http://127.0.0.1:5000/api/2.0/mlflow/"
                                      f"runs/log-batch failed with exception {error}")
        return original(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)


def _only_run(uri: str) -> str:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("learned-at").experiment_id
    (run,) = client.search_runs([experiment])
    return run.info.run_id


@pytest.mark.parametrize("lost", ["train/loss", "eval/clean_acc"])  # an epoch's, the final
def test_an_outage_longer_than_the_retries_stops_with_a_checkpoint_and_resume_completes(
        lost, tmp_path, tracking_uri, monkeypatch, capsys, reference_run):
    ref_uri, ref_id, ref_ck = reference_run(PLAIN)
    ck = tmp_path / "ck"
    _server_gone_for(monkeypatch, lost)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    assert run_command(main, [*PLAIN, f"checkpoint_dir={ck}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    run_id = _only_run(tracking_uri)
    assert line.startswith(f"runners.cotrain: the tracking server {tracking_uri} did not "
                           f"answer while writing run {run_id} (connection refused)"), line
    assert f"run {run_id} stopped, the last good checkpoint {ck}/{run_id}/last.pt" in line
    assert line.endswith(f"continue with: python -m runners.cotrain resume={run_id} "
                         f"checkpoint_dir={ck} (it logs what this process could not)")
    state = final_state(run_id, str(ck))
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.info.status == "RUNNING"  # nothing more was sent
    if lost == "train/loss":  # epoch 1's record is in the checkpoint at its end
        assert (state["epoch"], state["batch"]) == (1, 0)
        assert state["unlogged"]["epoch"] == 0
        assert "train/loss" in state["unlogged"]["metrics"]
        assert "train/loss" not in run.data.metrics
        assert "(end of epoch 1) is intact" in line
    else:  # the final evaluation: recomputed by the resume
        assert (state["epoch"], state["batch"], state["unlogged"]) == (2, 0, None)
    monkeypatch.undo()

    # the process that stopped has exited: its lease is free (it could not release it)
    monkeypatch.setattr(Holder, "gone", lambda self: True)
    assert cotrain([f"resume={run_id}", f"checkpoint_dir={ck}"], tracking_uri) == run_id
    assert_same_training(final_state(run_id, str(ck)), final_state(ref_id, ref_ck))
    assert metric_histories(tracking_uri, run_id) == metric_histories(ref_uri, ref_id)
    assert MlflowClient(tracking_uri).get_run(run_id).info.status == "FINISHED"


def test_the_tracker_sends_nothing_more_after_the_server_did_not_answer(tracking_uri,
                                                                        monkeypatch):
    from learned_at.runners.tracking import Tracker

    tracker = Tracker("outage", tracking_uri=tracking_uri)
    _server_gone_for(monkeypatch, "loss")
    tracker.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(TrackingUnavailableError):
        tracker.flush()
    assert tracker.pending == 1  # kept, not lost

    def no_request(*args, **kwargs):
        raise AssertionError("a request after the outage")

    monkeypatch.setattr(MlflowClient, "set_tag", no_request)
    monkeypatch.setattr(MlflowClient, "set_terminated", no_request)
    with pytest.raises(TrackingUnavailableError):
        tracker.set_tag("k", "v")
    tracker.finish("FAILED")  # closed here only
    import mlflow

    assert mlflow.active_run() is None
