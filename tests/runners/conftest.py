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
