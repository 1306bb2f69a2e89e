"""How a learned policy's update sees the whole global batch in a torchrun job: all-reduce of
the policy gradients vs all-gather of the batch (then the same update on every rank).

Both keep every rank's policy equal; they differ in what crosses the wire and what is
recomputed, per REINFORCE update of LAS-AT's strategy network:

* ``all_reduce``: each rank backpropagates ``-mean(log π · advantage)`` over its own slice
  (the graph from acting is reused) and the ranks average the flat gradient (size: the
  network's parameters) — what agents/las_at/policy.py does;
* ``all_gather``: the ranks gather the slices' images, chosen actions and rewards (size:
  the global batch), then every rank recomputes log π on the whole global batch and takes
  the step locally (no gradient traffic, but W times the policy's forward/backward).

Usage (one node, CPU, gloo)::

    torchrun --standalone --nproc_per_node=2 -m benchmarks.ddp_policy_sync [--batch 128]

Prints, on rank 0, the median milliseconds per update of each way for the small-CNN trunk
on 1x8x8 digits and the ResNet-18 trunk on 3x32x32 CIFAR inputs (README, "Several
processes (DDP)", holds a measured table).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist

from learned_at.agents.las_at.net import StrategyNet, categorical_log_prob, sample_categorical
from learned_at.targets.distributed import all_gather_cat, average_gradients, world_size

HEADS = [4, 4, 4]  # ε, α, K grids


def _log_prob(net: StrategyNet, x: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return sum(categorical_log_prob(z, actions[:, h]) for h, z in enumerate(net(x)))


def time_update(shape: tuple[int, int, int], trunk: str, local: int, reps: int
                ) -> dict[str, float]:
    """Median seconds per update of each way (the acting forward is outside the timing)."""
    torch.manual_seed(0)
    net = StrategyNet(shape, HEADS, trunk)
    gen = torch.Generator().manual_seed(dist.get_rank() if world_size() > 1 else 0)
    x = torch.rand(local, *shape, generator=gen)
    reward = torch.rand(local, generator=gen)
    out: dict[str, list[float]] = {"all_reduce": [], "all_gather": []}
    for _ in range(reps + 1):  # the first is a warm-up
        logits = net(x)
        actions = torch.stack([sample_categorical(z, gen) for z in logits], 1)
        log_prob = sum(categorical_log_prob(z, actions[:, h]) for h, z in enumerate(logits))
        if world_size() > 1:
            dist.barrier()
        t0 = time.perf_counter()
        net.zero_grad(set_to_none=True)
        (-(log_prob * reward).mean()).backward()
        average_gradients(net.parameters())
        t1 = time.perf_counter()
        net.zero_grad(set_to_none=True)
        xs, acts, rs = all_gather_cat(x), all_gather_cat(actions), all_gather_cat(reward)
        (-(_log_prob(net, xs, acts) * rs).mean()).backward()
        t2 = time.perf_counter()
        out["all_reduce"].append(t1 - t0)
        out["all_gather"].append(t2 - t1)
    return {k: statistics.median(v[1:]) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="global batch")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    local = args.batch // world_size()
    rows = []
    for name, shape, trunk in (("digits 1x8x8", (1, 8, 8), "small_cnn"),
                               ("cifar 3x32x32", (3, 32, 32), "resnet18")):
        net = StrategyNet(shape, HEADS, trunk)
        n_params = sum(p.numel() for p in net.parameters())
        t = time_update(shape, trunk, local, args.reps)
        rows.append((name, trunk, n_params, local * world_size() * int(torch.tensor(shape)
                                                                        .prod()), t))
    if dist.get_rank() == 0:
        print(f"{world_size()} gloo ranks, global batch {args.batch}, 1 thread each, "
              f"median of {args.reps}")
        print("| input | trunk | gradient floats | gathered image floats | all-reduce ms "
              "| all-gather ms |")
        print("|---|---|---|---|---|---|")
        for name, trunk, n_params, n_images, t in rows:
            print(f"| {name} | {trunk} | {n_params:,} | {n_images:,} | "
                  f"{1e3 * t['all_reduce']:.1f} | {1e3 * t['all_gather']:.1f} |")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    os._exit(0)  # gloo's teardown at interpreter exit can abort (runners/distributed.py)
