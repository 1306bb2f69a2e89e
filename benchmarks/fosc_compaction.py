"""Does FOSC stopping save compute? Attack time of the dynamic policy vs. full-K PGD.

For several fixed thresholds c, the dynamic policy (K = 10, α = ε/4, random start, natural
reference point) attacks the same batch as full-K PGD through the env; the two are timed
interleaved, round after round, and each round gives one time ratio (median reported).
Printed per threshold:

* ``steps/K``: mean gradient steps per sample over K (what the paper calls iterations);
* ``passes/K``: mean forward/backward sample passes over K (the work actually done: a sample
  stopped after j steps pays j + 1 passes, the last one deciding to stop; full PGD pays K);
* ``cpu``: the attack's process CPU time relative to the full-K attack's (goal: within 15%
  of passes/K); ``wall``: the same for wall-clock time. On a shared, overloaded machine (the
  CPUs this was written on ran ~20 processes on 2 cores) wall time mostly measures the
  scheduler, so the goal is judged on CPU time, the work the process actually did. One
  intra-op thread by default: with 2 threads on contended cores, the waiting thread spins and
  adds a fixed CPU cost per pass (measured: mnist_cnn fwd+bwd at batch 16/64/256 took
  0.30/0.25/0.45 s of CPU with 2 threads, 0.010/0.036/0.146 s with 1), which would make small
  (compacted) batches look expensive.

The target is ``mnist_cnn`` after a few clean SGD steps (so that its gradients are not those of
a random network), in eval mode; the batch is the first training images.

Result (2026-11-21, shared 2-core CPU at load ~20, batch 256 of MNIST train, 3 rounds,
1 thread; thresholds = FOSC quantiles along the trajectory):

    threshold quantile steps/K passes/K   cpu   wall cpu/(passes/K) cpu/(steps/K)
         7.11     0.10   0.585    0.631 0.663  0.414          1.050         1.134
        12.44     0.30   0.382    0.452 0.451  0.151          0.996         1.181
        15.87     0.50   0.273    0.357 0.371  0.362          1.038         1.357
        18.76     0.70   0.185    0.279 0.296  0.277          1.060         1.598
        23.36     0.90   0.121    0.221 0.229  0.237          1.037         1.884

CPU time follows the passes within 6% (goal: 15%); against gradient steps alone it is 13-88%
higher, the price of the decision pass at each stopped sample's last iterate.

    python -m benchmarks.fosc_compaction --root /work/shared/data        # MNIST, full mode
    python -m benchmarks.fosc_compaction --quick                         # digits, < 1 min
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from learned_at.agents.base import PolicyContext, make_policy
from learned_at.agents.dynamic import DynamicConfig
from learned_at.agents.fixed import PgdAtConfig
from learned_at.envs.attack_env import AttackEnv, EnvConfig
from learned_at.envs.episode import run_episode
from learned_at.envs.geometry import make_geometry
from learned_at.envs.result import AttackResult
from learned_at.targets.datasets import load_dataset
from learned_at.targets.models import make_model


def _warm_up(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """A few clean SGD steps so that the input gradients are those of a learning network."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(steps):
        j = torch.arange(i * 64, i * 64 + 64) % len(y)
        loss = F.cross_entropy(model(x[j]), y[j])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/work/shared/data")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9],
                        help="thresholds = these quantiles of the trajectory's FOSC values")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: idle threads of a contended pool spin "
                             "and inflate CPU time by a fixed cost per pass)")
    parser.add_argument("--quick", action="store_true", help="digits, 3 rounds (< 1 min)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_name, model_name, eps = ("digits", "digits_cnn", 0.2) if args.quick else (
        "mnist", "mnist_cnn", 0.3)
    rounds = 3 if args.quick else args.rounds
    data = load_dataset(data_name, None if args.quick else args.root)
    n = min(256 if args.quick else args.batch_size, len(data.train.labels))
    x = data.train.images[:n].float().div(255)
    y = data.train.labels[:n]
    torch.manual_seed(0)
    model = make_model(model_name, tuple(x.shape[1:]), data.num_classes)
    _warm_up(model, data.train.images[:4096].float().div(255), data.train.labels[:4096], 60)
    context = PolicyContext(geometry=make_geometry("linf"), eps=eps, image_shape=tuple(x.shape[1:]),
                            num_classes=data.num_classes, num_train=n, epochs=1,
                            batches_per_epoch=1, device=torch.device("cpu"), data=data_name)
    k = 10
    full = make_policy(PgdAtConfig(steps=k), context)
    shape = tuple(x.shape[1:])

    def env_for(policy) -> AttackEnv:
        return AttackEnv(model, EnvConfig(requirements=policy.requirements()), shape, n)

    full_env = env_for(full)

    # thresholds: quantiles of the FOSC values seen along the full trajectory (with no stopping)
    probe = make_policy(DynamicConfig(c_max=0.0, steps=k, final_fosc=False), context)
    probe_env = env_for(probe)
    seen: list[torch.Tensor] = []
    act = probe.act
    probe.act = lambda obs, t, g: (seen.append(obs["fosc"].clone()) if t else None) or act(obs, t, g)
    run_episode(probe_env, probe, x, y, generator=torch.Generator().manual_seed(0))
    values = torch.cat(seen[:k])
    quantiles = (0.1, 0.5, 0.9) if args.quick else tuple(args.quantiles)
    thresholds = [float(values.quantile(q)) for q in quantiles]

    def timed(policy, env) -> tuple[float, float, AttackResult]:
        """(process CPU seconds, wall seconds, record) of one attack on the batch."""
        gen = torch.Generator().manual_seed(0)
        c0, t0 = time.process_time(), time.perf_counter()
        result = run_episode(env, policy, x, y, generator=gen)
        return time.process_time() - c0, time.perf_counter() - t0, result

    timed(full, full_env)  # warm-up of the allocator / kernels
    print(f"{data_name} {model_name} batch={n} eps={eps} K={k} alpha=eps/4 "
          f"threads={torch.get_num_threads()} rounds={rounds}")
    print(f"{'threshold':>10} {'quantile':>8} {'steps/K':>8} {'passes/K':>9} {'cpu':>6} "
          f"{'wall':>6} {'cpu/(passes/K)':>15} {'cpu/(steps/K)':>14}")
    for q, c in zip(quantiles, thresholds):
        policy = make_policy(DynamicConfig(c_max=c, steps=k, final_fosc=False), context)
        env = env_for(policy)
        cpu, wall = [], []
        for _ in range(rounds):
            c_full, w_full, _ = timed(full, full_env)
            c_dyn, w_dyn, result = timed(policy, env)
            cpu.append(c_dyn / c_full)
            wall.append(w_dyn / w_full)
        steps = float(result.steps.float().mean()) / k
        passes = float(result.passes.float().mean()) / k
        r, w = statistics.median(cpu), statistics.median(wall)
        print(f"{c:10.4g} {q:8.2f} {steps:8.3f} {passes:9.3f} {r:6.3f} {w:6.3f} "
              f"{r / passes:15.3f} {r / steps:14.3f}", flush=True)

if __name__ == "__main__":
    main()
