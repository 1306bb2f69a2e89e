"""Speed of the hot path, as ratios measured in one run (interleaved repetitions).

(a) One PGD-K AT step through the env and the co-training loop (``runners.train.train_step``:
    policy, env, AT loss, scheduler, distribution tracking) relative to
    - a minimal hand-written PGD-K AT step on the same model and batch (goal ≤ 1.05), and
    - (K+1) plain training steps (reference: a minimal loop measures ≈ 0.83 for cifar_cnn,
      batch 128, K = 10, 2 CPU cores).
(b) A K-step attack in which half the samples stop after one step, relative to the full K-step
    attack for every sample (goal ≤ 0.60: compaction really saves the work).

Usage::

    python -m benchmarks.speed [--model cifar_cnn] [--batch 128] [--steps 10] [--reps 5] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from learned_at.envs.attack_env import AttackAction, AttackEnv, EnvConfig
from learned_at.runners.compose import compose_config
from learned_at.runners.run import build_run
from learned_at.runners.train import train_step
from learned_at.targets.datasets import DataSet, DataSplit
from learned_at.targets.loader import Batch

SHAPES = {"digits_cnn": (1, 8, 8), "mnist_cnn": (1, 28, 28)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def synthetic_data(shape: tuple[int, int, int], n: int, seed: int = 0) -> DataSet:
    """Random uint8 images with random labels (speed only)."""
    g = torch.Generator().manual_seed(seed)
    split = DataSplit(torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (n,), generator=g))
    return DataSet("synthetic", split, split, 10)


def hand_written_pgd_at_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                             y: torch.Tensor, eps: float, alpha: float, steps: int) -> None:
    """The minimal PGD-K AT step the framework is compared with."""
    model.eval()
    delta = (torch.rand_like(x) * 2 - 1) * eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        d = delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + d), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, d)
        delta = (d.detach() + alpha * g.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    model.train()
    loss = F.cross_entropy(model(x + delta), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def plain_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor) -> None:
    """One standard training step."""
    model.train()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bench_at_step(model_name: str, batch: int, steps: int, reps: int, device: str
                  ) -> dict[str, float]:
    """(a): env + loop vs hand-written PGD-K AT step vs (K+1) plain steps."""
    shape = SHAPES.get(model_name, (3, 32, 32))
    cfg = compose_config(["policy=pgd_at", f"target={model_name}", f"batch_size={batch}",
                          f"policy.steps={steps}",
                          "threat.eps=0.03137", f"device={device}", "progress=false"])
    run = build_run(cfg, data=synthetic_data(shape, 4 * batch))
    dev = run.device
    b = next(iter(run.loader))
    hand_model = run.target.model  # same architecture and weights; each variant trains it
    hand_opt = torch.optim.SGD(hand_model.parameters(), lr=1e-3, momentum=0.9)
    eps, alpha = run.eps, run.eps / 4
    steps_done = itertools.count()  # the global batch counter train_step takes
    runs: dict[str, Callable[[], None]] = {
        "framework": lambda: train_step(run, b, 0, next(steps_done)),
        "hand_written": lambda: hand_written_pgd_at_step(hand_model, hand_opt, b.x, b.y, eps,
                                                         alpha, steps),
        "plain_x(K+1)": lambda: [plain_step(hand_model, hand_opt, b.x, b.y)
                                 for _ in range(steps + 1)],
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for k, fn in runs.items():  # interleaved so that machine load hits every variant alike
            times[k].append(_timed(fn, dev))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"framework_s": med["framework"], "hand_written_s": med["hand_written"],
            "plain_x(K+1)_s": med["plain_x(K+1)"],
            "framework/hand_written": med["framework"] / med["hand_written"],
            "framework/plain_x(K+1)": med["framework"] / med["plain_x(K+1)"],
            "hand_written/plain_x(K+1)": med["hand_written"] / med["plain_x(K+1)"]}


def bench_compaction(model_name: str, batch: int, steps: int, reps: int, device: str
                     ) -> dict[str, float]:
    """(b): half the samples stop after one step vs all samples take K steps."""
    shape = SHAPES.get(model_name, (3, 32, 32))
    cfg = compose_config(["policy=pgd_at", f"target={model_name}", f"device={device}", "progress=false"])
    run = build_run(cfg, data=synthetic_data(shape, batch))
    dev = run.device
    model = run.target.model.eval()
    env = AttackEnv(model, EnvConfig(), shape, batch)
    b: Batch = next(iter(run.loader))
    n = b.x.shape[0]
    eps = torch.full((n,), 8 / 255, device=dev)
    full = torch.full((n,), steps, dtype=torch.long, device=dev)
    half = full.clone()
    half[: n // 2] = 1

    def attack(budget: torch.Tensor) -> None:
        env.reset(options={"x": b.x, "y": b.y})
        info = env.step(AttackAction(eps=eps, alpha=eps / 4, budget=budget))[-1]
        while info["num_active"] and not info["episode_done"]:
            info = env.step(AttackAction())[-1]

    attack(full), attack(half)
    t_full, t_half = [], []
    for _ in range(reps):
        t_full.append(_timed(lambda: attack(full), dev))
        t_half.append(_timed(lambda: attack(half), dev))
    expected = float(half.sum()) / float(full.sum())
    return {"full_s": statistics.median(t_full), "half_stop_s": statistics.median(t_half),
            "half_stop/full": statistics.median(t_half) / statistics.median(t_full),
            "work_ratio": expected}


def main(argv: list[str] | None = None) -> None:
    """Print both benchmarks for the chosen model and batch size."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar_cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="digits_cnn, 3 repetitions")
    a = p.parse_args(argv)
    if a.quick:
        a.model, a.reps = "digits_cnn", 3
    print(f"model={a.model} batch={a.batch} K={a.steps} reps={a.reps} "
          f"threads={torch.get_num_threads()} device={a.device}")
    at = bench_at_step(a.model, a.batch, a.steps, a.reps, a.device)
    print("(a) PGD-K AT step: " + "  ".join(f"{k}={v:.3f}" for k, v in at.items()))
    comp = bench_compaction(a.model, a.batch, a.steps, a.reps, a.device)
    print("(b) compaction:    " + "  ".join(f"{k}={v:.3f}" for k, v in comp.items()))
    ok_a = at["framework/hand_written"] <= 1.05
    ok_b = comp["half_stop/full"] <= 0.60
    print(f"goals: framework/hand_written <= 1.05: {'PASS' if ok_a else 'FAIL'};  "
          f"half_stop/full <= 0.60: {'PASS' if ok_b else 'FAIL'}")


if __name__ == "__main__":
    main()
