"""The logged model loads without running code: an exported program (``torch.export``, MLflow's
``pt2`` format) with a dynamic batch dimension, loaded through the README's examples with every
unpickler patched to fail; and a tampered archive (a pickled record slipped in) is refused
before anything is unpickled when ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``, the setting
the README recommends for colleagues' models."""

from __future__ import annotations

import _pickle
import io
import json
import pickle
import zipfile
from pathlib import Path

import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import pytest
import torch
from mlflow.exceptions import MlflowException

from learned_at.runners.cotrain import cotrain
from learned_at.runners.run_loading import load_run
from tests.runners.test_logged_model import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_unpickling(monkeypatch):
    """Every way to unpickle arbitrary objects fails (and is counted): pickle and _pickle's
    load / loads / Unpickler, cloudpickle's, and ``torch.load`` without ``weights_only``."""
    calls: list[str] = []

    def refuse(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called: a model load unpickled")
        return call

    for module in (pickle, _pickle):
        for name in ("load", "loads", "Unpickler"):
            monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
    try:
        import cloudpickle
        for name in ("load", "loads"):
            monkeypatch.setattr(cloudpickle, name, refuse(f"cloudpickle.{name}"))
    except ImportError:  # pragma: no cover
        pass
    torch_load = torch.load

    def weights_only_load(*args, **kwargs):
        if kwargs.get("weights_only") is False:
            return refuse("torch.load(weights_only=False)")()
        return torch_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_load)
    return calls


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A tiny run with its final model logged: (tracking uri, run id, checkpoint folder)."""
    folder = tmp_path_factory.mktemp("model")
    uri = f"sqlite:///{folder}/mlflow.db"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        run_id = cotrain([*TINY, f"checkpoint_dir={folder}/ck"], uri)
    torch.set_num_threads(before)
    return uri, run_id, str(folder / "ck"), folder


@pytest.mark.parametrize("pickle_allowed", ["true", "false"])  # MLflow's default, the safe one
def test_the_readme_examples_load_the_model_without_unpickling(logged_run, no_unpickling,
                                                               pickle_allowed, monkeypatch):
    uri, run_id, ck, folder = logged_run
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", pickle_allowed)
    mlflow.set_tracking_uri(uri)
    reference = load_run(run_id, ck, "cpu", uri).model
    model_uri = mlflow.get_run(run_id).data.tags["model_uri"]
    for source in (model_uri, f"runs:/{run_id}/model"):
        model = mlflow.pytorch.load_model(source)
        for n in (1, 5):  # any batch size: the batch dimension is dynamic
            x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(n))
            with torch.no_grad():
                assert torch.allclose(model(x), reference(x), atol=1e-5), (source, n)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    predicted = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(x.numpy())
    with torch.no_grad():
        assert torch.allclose(torch.as_tensor(predicted), reference(x), atol=1e-5)
    assert no_unpickling == []


def test_the_model_is_an_exported_program_with_its_weights_as_raw_tensors(logged_run):
    folder = logged_run[3]
    (archive,) = folder.rglob("model.pt2")
    assert not list(folder.rglob("model.pth"))  # no pickled module beside it
    assert _payload_configs(archive)  # weights' configs: every one stored raw
    for config in _payload_configs(archive).values():
        assert all(entry["use_pickle"] is False for entry in config["config"].values())


def test_a_tampered_archive_is_refused_before_anything_is_unpickled(logged_run, tmp_path,
                                                                    no_unpickling, monkeypatch):
    uri, run_id, ck, folder = logged_run
    monkeypatch.chdir(folder)
    (archive,) = folder.rglob("model.pt2")
    model_dir = archive.parent.parent
    tampered = tmp_path / "tampered"
    _copy_tree(model_dir, tampered)
    _slip_in_a_pickle(tampered / "data" / "model.pt2")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(MlflowException, match="not a pickle-free payload"):
        mlflow.pytorch.load_model(str(tampered))
    assert no_unpickling == []


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def _payload_configs(archive: Path) -> dict[str, dict]:
    with zipfile.ZipFile(archive) as z:
        return {n: json.loads(z.read(n)) for n in z.namelist()
                if n.endswith("weights_config.json")}


def _slip_in_a_pickle(archive: Path) -> None:
    """Mark the first weight as pickled and replace it with a payload that runs code."""
    with zipfile.ZipFile(archive) as z:
        records = {n: z.read(n) for n in z.namelist()}
    name, config = next(iter(_payload_configs(archive).items()))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    records[name] = json.dumps(config).encode()
    buffer = io.BytesIO()
    pickle.Pickler(buffer).dump(_Payload())
    records[f"{name.rsplit('/', 1)[0]}/{first['path_name']}"] = buffer.getvalue()
    with zipfile.ZipFile(archive, "w") as z:
        for record, content in records.items():
            z.writestr(record, content)


def _copy_tree(source: Path, target: Path) -> None:
    import shutil

    shutil.copytree(source, target)
