"""Find and rebuild a finished or interrupted run from its checkpoint (for resume and evaluation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learned_at.envs.geometry.base import Geometry, make_geometry
from learned_at.runners.checkpoint import load_checkpoint
from learned_at.runners.compose import compose_config
from learned_at.runners.config import ConfigError
from learned_at.runners.device import pick_device
from learned_at.runners.tracking import Tracker
from learned_at.runners.tracking_errors import tracking_access_error
from learned_at.targets.datasets import DataSet, load_dataset
from learned_at.targets.models import make_model


def find_checkpoint(run_id: str, checkpoint_dir: str, tracking_uri: str | None = None) -> Path:
    """A run's checkpoint: ``<checkpoint_dir>/<run_id>/last.pt``, else its MLflow artifact."""
    local = Path(checkpoint_dir) / run_id / "last.pt"
    if local.exists():
        return local
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="checkpoints/last.pt",
            dst_path=str(Path(checkpoint_dir) / f"{run_id}-download"), tracking_uri=tracking_uri))
    except Exception as e:
        access = tracking_access_error(e, tracking_uri, f"downloading the checkpoint of run "
                                                        f"{run_id}")
        if access is not None:
            raise access from e
        raise ConfigError(f"no checkpoint for run {run_id!r}: not at {local} and not in the run's "
                          f"MLflow artifacts ({type(e).__name__}: {e}). Check the run id, "
                          "checkpoint_dir= and MLFLOW_TRACKING_URI.") from None


def load_run_state(run_id: str, checkpoint_dir: str, tracking_uri: str | None = None
                   ) -> dict[str, Any]:
    """Load a run's checkpoint dict (``weights_only``; see runners/checkpoint.py)."""
    return load_checkpoint(find_checkpoint(run_id, checkpoint_dir, tracking_uri))


@dataclass
class LoadedRun:
    """A trained target rebuilt from its run, with its data and threat model."""

    run_id: str
    model: nn.Module
    data: DataSet
    geometry: Geometry
    eps: float
    device: torch.device
    tracking_uri: str | None = None
    epoch: int = 0  # epochs trained when the checkpoint was written

    def test_tensors(self, n: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` test samples (all when n = 0) on the device: (n, C, H, W), (n,)."""
        split = self.data.test
        n = len(split.labels) if n <= 0 else min(n, len(split.labels))
        x = split.images[:n].to(self.device).float().div_(255)
        return x, split.labels[:n].to(self.device)

    def evaluation_tracker(self, run_name: str, tags: dict[str, str]) -> Tracker:
        """A new MLflow run nested under this run, for an evaluation's results (the training
        run itself stays untouched)."""
        return Tracker(parent_run_id=self.run_id, run_name=run_name, tags=tags,
                       tracking_uri=self.tracking_uri)


def load_run(run_id: str, checkpoint_dir: str = "checkpoints", device: str = "auto",
             tracking_uri: str | None = None) -> LoadedRun:
    """Rebuild the target of ``run_id`` in eval mode from its last checkpoint."""
    state = load_run_state(run_id, checkpoint_dir, tracking_uri)
    cfg = compose_config(state["overrides"])
    dev = pick_device(device)
    data = load_dataset(cfg.data.name, cfg.data.root)
    model = make_model(state["target"], data.image_shape, data.num_classes)
    model.load_state_dict(state["model"])
    model.to(dev).eval()
    return LoadedRun(run_id, model, data, make_geometry(cfg.threat), float(state["eps"]), dev,
                     tracking_uri, int(state.get("epoch", 0)))
