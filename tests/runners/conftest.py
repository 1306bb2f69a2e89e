"""Fixtures for the evaluation tests: a small model trained on the embedded digits set."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from targets.datasets import load_dataset


class DigitsMLP(nn.Module):
    """Linear-ReLU-linear classifier on 1x8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(scope="session")
def digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    data = load_dataset("digits")
    return (data.train.images.float() / 255, data.train.labels,
            data.test.images.float() / 255, data.test.labels)


@pytest.fixture(scope="session")
def digits_model(digits_tensors) -> nn.Module:
    """~96% clean test accuracy after 40 full-batch Adam steps (< 1 s unloaded)."""
    x, y, _, _ = digits_tensors
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_thread
    torch.manual_seed(0)
    net = DigitsMLP()
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    torch.set_num_threads(before)
    return net.eval()


def run_interrupted(args: list[str], tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run ``args``, interrupted (KeyboardInterrupt) at the start of its second epoch.

    Returns:
        The id of the interrupted run (asserted KILLED).
    """
    from mlflow.tracking import MlflowClient

    from runners.cotrain import Cotrainer, cotrain

    calls = {"n": 0}
    original = Cotrainer.train_epoch

    def interrupt_second_epoch(self, epoch, bar):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, epoch, bar)

    monkeypatch.setattr(Cotrainer, "train_epoch", interrupt_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        cotrain(args, tracking_uri)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("learned-at").experiment_id],
                              order_by=["attributes.start_time DESC"])
    cut_id = runs[0].info.run_id
    assert runs[0].info.status == "KILLED"
    monkeypatch.setattr(Cotrainer, "train_epoch", original)
    return cut_id


def interrupt_and_resume(args: list[str], tracking_uri: str, checkpoint_dir: str,
                         monkeypatch: pytest.MonkeyPatch) -> str:
    """Run ``args``, interrupted at the start of its second epoch (:func:`run_interrupted`),
    then resume.

    Returns:
        The id of the interrupted-then-resumed run (its status was KILLED before the resume).
    """
    from runners.cotrain import cotrain

    cut_id = run_interrupted(args, tracking_uri, monkeypatch)
    assert cotrain([f"resume={cut_id}", f"checkpoint_dir={checkpoint_dir}"], tracking_uri) == cut_id
    return cut_id
