"""Fixtures for the evaluation tests: a small model trained on the embedded digits set."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learned_at.targets.datasets import load_dataset


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


class QuantisedInput(nn.Module):
    """Rounds the input to ``levels`` grey levels first: zero input gradient everywhere."""

    def __init__(self, net: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * self.levels) / self.levels)


def run_interrupted(args: list[str], tracking_uri: str, monkeypatch: pytest.MonkeyPatch
                    ) -> str:
    """Run ``args``, interrupted (KeyboardInterrupt) at the start of its second epoch.

    Returns:
        The id of the interrupted run (asserted KILLED).
    """
    from mlflow.tracking import MlflowClient

    from learned_at.runners.checkpoint import Position
    from learned_at.runners.cotrain import cotrain

    calls = {"n": 0}
    original = Position.begin_epoch

    def interrupt_second_epoch(self, policy, epoch, data_rng):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, policy, epoch, data_rng)

    monkeypatch.setattr(Position, "begin_epoch", interrupt_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        cotrain(args, tracking_uri)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("learned-at").experiment_id],
                              order_by=["attributes.start_time DESC"])
    cut_id = runs[0].info.run_id
    assert runs[0].info.status == "KILLED"
    monkeypatch.setattr(Position, "begin_epoch", original)
    return cut_id


def interrupt_and_resume(args: list[str], tracking_uri: str, checkpoint_dir: str,
                         monkeypatch: pytest.MonkeyPatch, resume: bool = True) -> str:
    """Run ``args``, interrupted at the start of its second epoch (:func:`run_interrupted`),
    then resume (unless ``resume=False``).

    Returns:
        The id of the interrupted-then-resumed run (its status was KILLED before the resume).
    """
    from learned_at.runners.cotrain import cotrain

    cut_id = run_interrupted(args, tracking_uri, monkeypatch)
    if resume:
        assert cotrain([f"resume={cut_id}", f"checkpoint_dir={checkpoint_dir}"],
                       tracking_uri) == cut_id
    return cut_id


#: a co-training of 2 epochs x 4 batches on 256 digits, cheap to run several times
TINY_RUN = ["epochs=2", "batch_size=64", "data.train_subset=256", "data.test_subset=64",
            "eval.test_subset=32", "eval.final_pgd_steps=2", "progress=false",
            "tracking.system_metrics=false", "tracking.log_model=false", "tracking.plot_every=0",
            "monitor.enabled=false"]


def metric_histories(tracking_uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run (times and system metrics aside) as sorted (step, value) points."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    keys = [k for k in client.get_run(run_id).data.metrics
            if not k.startswith(("time/", "system/"))]
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k))
            for k in keys}


def final_state(run_id: str, checkpoint_dir: str) -> dict:
    """The run's last checkpoint (model, policy, position)."""
    from learned_at.runners.run_loading import load_run_state

    return load_run_state(run_id, checkpoint_dir)


def assert_same_training(a: dict, b: dict) -> None:
    """Two final checkpoints hold bit-identical target weights and policy state."""
    for part in ("model", "policy"):
        assert a[part].keys() == b[part].keys(), part
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert (a["epoch"], a["batch"], a["global_step"]) == (b["epoch"], b["batch"], b["global_step"])


def sigterm_after_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Send this process SIGTERM right after the training batch of global step ``step``."""
    import signal

    from learned_at.runners import train

    original = train.train_step

    def train_step(run, batch, epoch, global_step):
        out = original(run, batch, epoch, global_step)
        if global_step == step:
            signal.raise_signal(signal.SIGTERM)
        return out

    monkeypatch.setattr(train, "train_step", train_step)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """reference(args) -> (tracking uri, run id, checkpoint dir) of an uninterrupted run of
    ``args`` (cached per module). Call it inside the test, under the test's thread setting."""
    from learned_at.runners.cotrain import cotrain

    root = tmp_path_factory.mktemp("reference")
    cache: dict[tuple[str, ...], tuple[str, str, str]] = {}

    def run(args: list[str]) -> tuple[str, str, str]:
        key = tuple(args)
        if key not in cache:
            folder = root / str(len(cache))
            folder.mkdir()
            uri, ck = f"sqlite:///{folder}/mlflow.db", str(folder / "ck")
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(folder)
                cache[key] = (uri, cotrain([*args, f"checkpoint_dir={ck}"], uri), ck)
        return cache[key]

    return run


# ------------------------------------------------------------------ a team's tracking server

#: the researchers of the team server (user name, password)
ALICE = ("alice", "alice-password-1")
BOB = ("bob", "bob-password-2")


@pytest.fixture(scope="session")
def team_server(tmp_path_factory):
    """A throw-away PostgreSQL cluster and an MLflow server with MLflow's basic-auth app, as
    the README's team recipe runs it; users alice and bob (no permissions beyond the server's
    default READ). Yields (cluster, server, auth). Skipped where PostgreSQL or psycopg is
    missing."""
    from tests.runners.tracking_server import (Auth, add_user, mlflow_server, postgres_cluster,
                                               postgres_missing)

    why = postgres_missing()
    if why:
        pytest.skip(why)
    pytest.importorskip("psycopg", reason="needs the server extra: pip install -e '.[server]'")
    pytest.importorskip("flask_wtf", reason="needs the server extra (mlflow[auth])")
    auth = Auth()
    with postgres_cluster() as cluster, \
            mlflow_server(cluster.uri, cluster.folder, auth=auth) as server:
        for user, password in (ALICE, BOB):
            add_user(server, auth, user, password)
        yield cluster, server, auth


def login_env(login: tuple[str, str] | None) -> dict[str, str]:
    """MLflow's credential variables for ``login`` (None: anonymous, all removed)."""
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                        "MLFLOW_TRACKING_TOKEN")}
    if login is not None:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = login
    return env


def log_in(monkeypatch: pytest.MonkeyPatch, login: tuple[str, str] | None) -> None:
    """This process talks to the tracking server as ``login`` (None: anonymous)."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    if login is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", login[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", login[1])
