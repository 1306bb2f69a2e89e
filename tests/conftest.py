"""Shared fixtures: tiny models and data that need no download and no data folder.

Tests marked ``server`` (a throw-away PostgreSQL + MLflow server), ``launcher`` (a sweep
through a Hydra launcher's subprocesses) ``ddp`` (a 2-rank torchrun job) or ``packaging`` (a wheel built and imported) start processes,
and tests marked ``slow`` train end to end for a minute or more; they take a minute or a few
each and run with ``pytest --integration`` (what ``.ci/run`` does); the default run skips them.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see runners/threads.py
# One instruction set for every machine the tests run on (before torch loads its kernels):
# oneDNN's and ATen's AVX-512 kernels round differently from their AVX2 ones, and a policy's
# sampled choices amplify that, so bit-exact expectations (tests/runners/test_golden.py) hold
# only for a fixed ISA. AVX2 exists on every x86-64 machine CI runs on.
for _key, _value in (("ONEDNN_MAX_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2"),
                     ("MKL_CBWR", "AVX2")):
    os.environ.setdefault(_key, _value)

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

INTEGRATION_MARKERS = ("server", "launcher", "ddp", "packaging", "slow")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--integration", action="store_true",
                     help="also run the tests marked server/launcher/ddp/packaging/slow (processes, "
                          "long runs)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--integration"):
        return
    skip = pytest.mark.skip(reason="integration or slow; run with pytest --integration")
    for item in items:
        if any(item.get_closest_marker(m) for m in INTEGRATION_MARKERS):  # markers only:
            # keywords also hold folder names (a checkout in a folder named ddp)
            item.add_marker(skip)


class TinyNet(nn.Module):
    """Conv + BatchNorm + linear head on 1x8x8 inputs (BN makes batch-composition bugs visible)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Flatten(), nn.Linear(8 * 64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():  # non-trivial running statistics
        net.train()
        for _ in range(3):
            net(torch.rand(64, 1, 8, 8))
    return net.eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    """A fresh sqlite store; the test runs in tmp_path so MLflow's ./mlruns artifacts land there."""
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture
def one_thread():
    """Tiny tensors: on a shared, loaded CPU, intra-op threads cost far more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
