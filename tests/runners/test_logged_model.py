"""The final model belongs to its run and the run's experiment, on every kind of store.

A run opened with MLflow's public ``mlflow.start_run`` (runners/tracking.py) logs its model
into its own experiment: ``mlflow.search_logged_models`` on that experiment finds it, and
nothing lands in another experiment's folder (the Default experiment's ``mlruns/0`` was where
a model logged by run id alone used to go), and it loads by its ``models:/`` URI and by
``runs:/<run id>/model``. Checked on a ``file:`` store, a ``sqlite:`` store and
(``--integration``) a tracking server.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from learned_at.runners.cotrain import cotrain
from tests.runners.tracking_server import mlflow_server

TINY = ["epochs=1", "batch_size=64", "data.train_subset=128", "data.test_subset=64",
        "eval.test_subset=32", "eval.final_pgd_steps=1", "monitor.enabled=false",
        "progress=false", "policy=fgsm_rs", "tracking.system_metrics=false",
        "tracking.plot_every=0", "experiment=models-here"]


def _check_model_belongs_to_its_run(uri: str, tmp_path: Path) -> str:
    run_id = cotrain([*TINY, f"checkpoint_dir={tmp_path}/ck"], uri)
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(run_id)
    experiment = mlflow.get_experiment_by_name("models-here")
    assert run.info.experiment_id == experiment.experiment_id != "0"
    models = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id],
                                         output_format="list")
    assert [m.source_run_id for m in models] == [run_id]
    assert not mlflow.search_logged_models(experiment_ids=["0"], output_format="list")
    for uri in (run.data.tags["model_uri"], f"runs:/{run_id}/model"):  # the README's lines
        model = mlflow.pytorch.load_model(uri)
        assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    return experiment.experiment_id


@pytest.mark.usefixtures("one_thread")
def test_sqlite_store(tmp_path, tracking_uri):
    experiment_id = _check_model_belongs_to_its_run(tracking_uri, tmp_path)
    folders = {p.name for p in (tmp_path / "mlruns").iterdir()}  # the store's artifact root
    assert folders == {experiment_id}, folders


@pytest.mark.usefixtures("one_thread")
def test_file_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    experiment_id = _check_model_belongs_to_its_run(store.as_uri(), tmp_path)
    assert not (tmp_path / "mlruns").exists()  # everything in the store's own folder
    models = list(store.glob("*/models/*"))
    assert models and {p.parts[-3] for p in models} == {experiment_id}


@pytest.mark.server
@pytest.mark.usefixtures("one_thread")
def test_tracking_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = f"sqlite:///{tmp_path}/server.db"
    with mlflow_server(backend, tmp_path / "server") as server:
        _check_model_belongs_to_its_run(server.uri, tmp_path)
        assert not (tmp_path / "mlruns").exists()  # artifacts went through the server
        assert any(server.artifacts.rglob("MLmodel"))
