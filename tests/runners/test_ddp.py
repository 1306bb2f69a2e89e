"""Data-parallel co-training under torchrun: 2 gloo ranks on the CPU against one process.

One ``torchrun`` launch (2 ranks, loopback, a free port) runs tests/runners/ddp_worker.py:
``pgd_at`` without random starts must end with the weights of a one-process run on the same
global batches (the ranks' slices together are that batch, DDP averages the gradients), and
LAS-AT must end with the same policy network on both ranks (its update sees the whole batch).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learned_at.runners.compose import compose_config
from learned_at.runners.cotrain import execute
from learned_at.runners.run import build_run
from tests.runners.tracking_server import free_port

pytestmark = pytest.mark.ddp
ROOT = Path(__file__).resolve().parents[2]
TINY = ["data=digits", "data.train_subset=512", "data.test_subset=64", "epochs=1",
        "batch_size=128", "eval.test_subset=32", "eval.epoch_pgd_steps=1",
        "eval.final_pgd_steps=1", "progress=false", "tracking.log_model=false",
        "tracking.system_metrics=false", "threads=1"]
PGD = ["policy=pgd_at", "policy.steps=3", "policy.random_start=false"]
LOSSES = {"pgd": [], "awp": ["at_loss=awp"],  # AWP: the proxy's step is averaged too
          "fastbat": ["at_loss=fast_bat"],  # an autograd.grad step beside DDP
          "soft": ["at_loss.soft_labels.enabled=true",  # per-sample soft-label memory
                   "at_loss.soft_labels.warmup_epochs=0"]}
LEARNED = {"las": ["policy=las_at", "policy.interval=1"],  # a REINFORCE step every batch
           "sdi": ["policy=fgsm_sdi", "policy.update_every=1"],  # generator + gradient memory
           "pgi": ["policy=fgsm_pgi"]}  # per-sample prior memory
CONSTANT_LR = ["optim.schedule=constant"]  # a run extended by resume= keeps its learning rate


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """Both co-trainings on 2 ranks; the folder with each rank's ``<name>.rank<r>.pt``."""
    tmp = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "MPLBACKEND": "Agg"}
    jobs = [f"{name}={','.join([*TINY, *extra, f'checkpoint_dir={tmp}/ck'])}"
            for name, extra in (*((k, [*PGD, *v]) for k, v in LOSSES.items()),
                                *LEARNED.items(), ("resume", [*PGD, *CONSTANT_LR]))]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
               "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               str(ROOT / "tests" / "runners" / "ddp_worker.py"), str(tmp), *jobs]
    done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return tmp


def _load(folder: Path, name: str, rank: int) -> dict:
    return torch.load(folder / f"{name}.rank{rank}.pt", weights_only=True)


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_two_ranks_train_the_weights_of_one_process(two_ranks, name, tmp_path, tracking_uri):
    rank0, rank1 = _load(two_ranks, name, 0), _load(two_ranks, name, 1)
    assert _max_difference(rank0["model"], rank1["model"]) == 0.0  # DDP keeps ranks equal
    overrides = [*TINY, *PGD, *LOSSES[name], f"checkpoint_dir={tmp_path}/ck"]
    one = build_run(compose_config(overrides), overrides)
    one_run = execute(one, tracking_uri)
    reference = {k: v.detach().cpu() for k, v in one.target.model.state_dict().items()}
    start = {k: v.detach().cpu() for k, v in _initial_weights(overrides).items()}
    assert _max_difference(reference, start) > 1e-3  # the run trained: the check can fail
    difference = _max_difference(rank0["model"], reference)
    print(f"{name}: max |w_2ranks - w_1process| = {difference:.3g}")
    assert difference < 1e-5
    # rank 0 logged the global batch's training means (both ranks' slices), as one process
    ranks_logged = _metrics(f"sqlite:///{two_ranks}/mlflow.db", rank0["run_id"])
    one_logged = _metrics(tracking_uri, one_run)
    for key in ("train/loss", "train/adv_acc"):
        assert ranks_logged[key] == pytest.approx(one_logged[key], abs=1e-5), key
    if rank0["soft_labels"] is not None:  # every rank holds the whole memory, as one process
        one_memory = {"memory": one.target.loss.soft_labels.memory.detach().cpu()}
        assert _max_difference(rank0["soft_labels"], rank1["soft_labels"]) == 0.0
        assert _max_difference(rank0["soft_labels"], one_memory) < 1e-5
        assert float(one_memory["memory"].abs().sum()) > 0  # the memory was written


def _metrics(uri: str, run_id: str) -> dict[str, float]:
    from mlflow import MlflowClient

    return MlflowClient(uri).get_run(run_id).data.metrics


@pytest.mark.parametrize("name", sorted(LEARNED))
def test_learned_policy_is_the_same_on_both_ranks(two_ranks, name):
    """Parameters, BatchNorm statistics, baselines and per-sample memories: all equal."""
    rank0, rank1 = _load(two_ranks, name, 0), _load(two_ranks, name, 1)
    assert rank0["policy"]
    assert _max_difference(rank0["policy"], rank1["policy"]) == 0.0
    assert _max_difference(rank0["model"], rank1["model"]) == 0.0


def _initial_weights(overrides: list[str]) -> dict[str, torch.Tensor]:
    from learned_at.targets.datasets import load_dataset
    from learned_at.targets.models import make_model
    from learned_at.runners.presets import resolve_config

    data = load_dataset("digits")
    torch.manual_seed(0)
    return make_model(resolve_config(compose_config(overrides)).target.name, data.image_shape,
                      data.num_classes).state_dict()


@pytest.mark.usefixtures("one_thread")
def test_a_two_rank_checkpoint_resumes_in_one_process(two_ranks, tmp_path, tracking_uri):
    """Checkpoints hold the whole state: the 2-rank run's last checkpoint (1 epoch), extended
    to 2 epochs in one process, ends with the weights of a 2-epoch one-process run."""
    from learned_at.runners.checkpoint import load_checkpoint
    from learned_at.runners.cotrain import cotrain

    rank0 = _load(two_ranks, "resume", 0)
    run_id = cotrain([f"resume={rank0['run_id']}", "epochs=2", "progress=false",
                      f"checkpoint_dir={two_ranks / 'ck'}"], f"sqlite:///{two_ranks}/mlflow.db")
    resumed = load_checkpoint(two_ranks / "ck" / run_id / "last.pt")["model"]
    overrides = [*(o for o in TINY if not o.startswith("epochs=")), "epochs=2", *PGD,
                 *CONSTANT_LR, f"checkpoint_dir={tmp_path}/ck"]
    one = build_run(compose_config(overrides), overrides)
    execute(one, tracking_uri)
    reference = {k: v.detach().cpu() for k, v in one.target.model.state_dict().items()}
    assert _max_difference(rank0["model"], reference) > 1e-4  # epoch 2 moved the weights
    difference = _max_difference(resumed, reference)
    print(f"2 ranks (epoch 1) -> 1 process (epoch 2): max |w - w_1process| = {difference:.3g}")
    assert difference < 1e-5
