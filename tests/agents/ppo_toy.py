"""A toy co-training for the PPO tests: a fixed linear target whose loss grows with the budget.

The target scores ``s = 20·(mean(x) − 0.3)`` for class 0 and ``−s`` for class 1; every image is
constant 0.5 with label 0. A sign-gradient step moves every pixel down by α, so after the attack
δ = −min(α·K, ε) per pixel and the CE loss (the reward) strictly increases with the reached
budget: the largest ε (with enough α·K) is the unique best strategy.
"""

from __future__ import annotations

import torch
from torch import nn

from learned_at.agents.base import PolicyContext, StepInfo
from learned_at.envs.attack_env import AttackEnv, EnvConfig
from learned_at.envs.episode import run_episode
from learned_at.envs.geometry import make_geometry
from learned_at.targets.loader import Batch
from learned_at.targets.losses.ce import CrossEntropy, CrossEntropyConfig

SHAPE = (1, 4, 4)
EPS = 0.1


class ToyTarget(nn.Module):
    """logits = [s, −s], s = 20·(mean(x) − 0.3)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale * (x.flatten(1).mean(1) - 0.3)
        return torch.stack([s, -s], 1)


def toy_context(batches_per_epoch: int = 4) -> PolicyContext:
    return PolicyContext(geometry=make_geometry("linf"), eps=EPS, image_shape=SHAPE,
                         num_classes=2, num_train=256, epochs=100,
                         batches_per_epoch=batches_per_epoch, device=torch.device("cpu"),
                         data="cifar10")  # the CIFAR grids: 13 ε values


class ToyLoader:
    """``batches`` identical batches of constant images per pass."""

    def __init__(self, batch_size: int, batches: int) -> None:
        self.batch_size, self.batches = batch_size, batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        n = self.batch_size
        for i in range(self.batches):
            yield Batch(x=torch.full((n, *SHAPE), 0.5), y=torch.zeros(n, dtype=torch.long),
                        index=torch.arange(n) + i * n)


class ToyTrainer:
    """The co-training's step on the toy target (the target does not learn), with what SB3's
    adapter drives (:class:`agents.ppo.vec_env.Driven`: policy, model, loader, step)."""

    def __init__(self, policy, batch_size: int = 64, batches: int = 4, seed: int = 0) -> None:
        self.policy, self.model = policy, ToyTarget()
        self.env = AttackEnv(self.model, EnvConfig(requirements=policy.requirements(),
                                                   num_classes=2), SHAPE, batch_size)
        self.loss = CrossEntropy(CrossEntropyConfig())
        self.loader = ToyLoader(batch_size, batches)
        self.gen = torch.Generator().manual_seed(seed)
        self.global_step = 0
        self.chosen_eps: list[torch.Tensor] = []

    def step(self, b: Batch, epoch: int):
        result = run_episode(self.env, self.policy, b.x, b.y, b.index, generator=self.gen)
        self.chosen_eps.append(self.policy.describe(result)["eps"])
        with torch.no_grad():  # the target's step without the step: its per-sample loss
            out = self.loss.compute(self.model, result, self.policy.target_inputs(result))
        metrics = self.policy.update(result, None, out,
                                     StepInfo(self.global_step, epoch, self.gen))
        self.global_step += 1
        return {}, metrics
