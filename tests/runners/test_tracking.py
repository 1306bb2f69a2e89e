"""Tests of runners.tracking against a temporary sqlite MLflow store."""

from __future__ import annotations

import pytest
import torch

from learned_at.runners.run_store import UnknownRunError, flatten_config
from learned_at.runners.tracking import ParamConflictError, Tracker


@pytest.fixture()
def uri(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)  # default artifact root ./mlruns lands in tmp_path
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_flatten_config_nested_lists_and_truncation():
    flat = flatten_config({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None, "f": {}, "g": "x" * 7000})
    assert flat["a.b"] == "1"
    assert flat["a.c.d"] == "[1, 2]"
    assert "e" not in flat  # a preset (None) is not a param value
    assert flat["f"] == "{}"
    assert len(flat["g"]) == 6000 and flat["g"].endswith("...")
    assert flatten_config({"x": 1}, prefix="cfg") == {"cfg.x": "1"}


def test_tensor_metrics_arrive_after_flush_only(uri):
    with Tracker("t", tracking_uri=uri) as tracker:
        for step in range(3):
            tracker.log_metrics(
                {"train/loss": torch.tensor(0.5 * step, requires_grad=True) * 2, "train/n": step},
                step=step,
            )
        tracker.log_metrics({"train/acc": torch.tensor([0.25], dtype=torch.float16)}, step=7)
        client = tracker.client
        assert client.get_metric_history(tracker.run_id, "train/loss") == []
        assert tracker.pending == 7
        tracker.flush()
        assert tracker.pending == 0
        loss = client.get_metric_history(tracker.run_id, "train/loss")
        assert [(m.step, m.value) for m in loss] == [(0, 0.0), (1, 1.0), (2, 2.0)]
        count = client.get_metric_history(tracker.run_id, "train/n")
        assert [(m.step, m.value) for m in count] == [(0, 0.0), (1, 1.0), (2, 2.0)]
        assert [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "train/acc")] == [
            (7, 0.25)
        ]
        assert tracker.latest("train/loss") == 2.0
        assert tracker.latest("missing") is None
        run_id = tracker.run_id
    assert client.get_run(run_id).info.status == "FINISHED"


def test_metric_validation(uri):
    with Tracker("t", tracking_uri=uri) as tracker:
        with pytest.raises(ValueError, match="one element"):
            tracker.log_metrics({"a/b": torch.zeros(3)}, step=0)
        with pytest.raises(TypeError):
            tracker.log_metrics({"a/b": "x"}, step=0)


def test_nan_is_logged_and_auto_flush(uri):
    with Tracker("t", tracking_uri=uri) as tracker:
        tracker.max_buffer = 10
        tracker.log_metrics({"x/nan": float("nan")}, step=0)
        for step in range(10):
            tracker.log_metrics({"x/v": torch.tensor(float(step))}, step=step)
        assert tracker.pending == 0  # 11 values > max_buffer: flushed automatically
        history = tracker.client.get_metric_history(tracker.run_id, "x/nan")
        assert len(history) == 1 and history[0].value != history[0].value
        assert len(tracker.client.get_metric_history(tracker.run_id, "x/v")) == 10


def test_many_metrics_are_chunked(uri):
    with Tracker("t", tracking_uri=uri) as tracker:
        tracker.max_buffer = 10_000
        tracker.log_metrics({f"m/k{i}": torch.tensor(float(i)) for i in range(2500)}, step=3)
        tracker.flush()
        assert tracker.client.get_metric_history(tracker.run_id, "m/k2499")[0].value == 2499.0


def test_params_flattened_chunked_and_resume(uri):
    params = {"group": {f"p{i}": i for i in range(250)}, "name": "run"}
    with Tracker("t", run_name="first", tracking_uri=uri) as tracker:
        tracker.log_params(params)
        run_id = tracker.run_id
        logged = tracker.client.get_run(run_id).data.params
        assert len(logged) == 251
        assert logged["group.p249"] == "249"

    with Tracker("ignored", run_id=run_id, tracking_uri=uri) as resumed:
        assert resumed.run_id == run_id
        assert resumed.client.get_run(run_id).info.status == "RUNNING"
        assert resumed.client.get_run(run_id).info.run_name == "first"
        resumed.log_params(params)  # identical values: fine
        resumed.log_params({"extra": 1.5})
        with pytest.raises(ParamConflictError, match="group.p3"):
            resumed.log_params({"group": {"p3": 4}})
    run = resumed.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["extra"] == "1.5"


def test_resume_unknown_run(uri):
    with pytest.raises(UnknownRunError, match="no MLflow run '0+' at tracking URI") as info:
        Tracker(run_id="0" * 32, tracking_uri=uri)
    assert "\n" not in str(info.value)


def test_context_manager_marks_failed_and_killed(uri):
    with pytest.raises(RuntimeError, match="boom"):
        with Tracker("t", tracking_uri=uri) as tracker:
            tracker.log_metrics({"a/b": torch.tensor(1.0)}, step=0)
            raise RuntimeError("boom")
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.metrics["a/b"] == 1.0  # flushed before terminating

    with pytest.raises(KeyboardInterrupt):
        with Tracker("t", tracking_uri=uri) as killed:
            raise KeyboardInterrupt
    assert killed.client.get_run(killed.run_id).info.status == "KILLED"


def test_artifacts_and_tags(uri, tmp_path):
    from learned_at.runners import plots

    local = tmp_path / "note.txt"
    local.write_text("hello")
    with Tracker("t", tracking_uri=uri, tags={"purpose": "test"}) as tracker:
        tracker.set_tag("stage", 1)
        tracker.log_dict({"a": 1}, "cfg/config.json")
        tracker.log_text("text", "notes/t.txt")
        tracker.log_artifact(local, "files")
        tracker.log_figure(plots.curves({"acc": [(0, 0.1), (1, 0.2)]}, "acc", "accuracy"), "plots/acc.png")
        path = tracker.download_artifact("cfg/config.json", tmp_path / "dl")
        assert open(path).read().strip().startswith("{")
        assert (tmp_path / "dl").exists()
        names = {a.path for a in tracker.client.list_artifacts(tracker.run_id, "plots")}
        assert names == {"plots/acc.png"}
        tags = tracker.client.get_run(tracker.run_id).data.tags
        assert tags["purpose"] == "test" and tags["stage"] == "1"
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []
