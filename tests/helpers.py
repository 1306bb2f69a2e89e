"""Builders shared by the tests: a policy context, an env for a policy, one attack episode."""

from __future__ import annotations

import torch
from torch import nn

from learned_at.agents.base import Policy, PolicyContext
from learned_at.envs.attack_env import AttackEnv, EnvConfig
from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.episode import run_episode
from learned_at.envs.geometry import make_geometry
from learned_at.envs.requirements import EnvRequirements
from learned_at.envs.result import AttackResult

EPS = 0.2
SHAPE = (1, 8, 8)


def make_context(*, eps: float = EPS, epochs: int = 2, data: str = "digits",
                 at_loss_name: str = "ce", attack_loss: AttackLoss = AttackLoss.CE,
                 num_train: int = 64, batches_per_epoch: int = 4, geometry: str = "linf",
                 image_shape: tuple[int, int, int] = SHAPE) -> PolicyContext:
    """A policy context for 1x8x8 inputs with 10 classes on the CPU."""
    return PolicyContext(geometry=make_geometry(geometry), eps=eps, image_shape=image_shape,
                         num_classes=10, num_train=num_train, epochs=epochs,
                         batches_per_epoch=batches_per_epoch, device=torch.device("cpu"),
                         attack_loss=attack_loss, data=data, at_loss_name=at_loss_name)


def env_for(model: nn.Module, policy: Policy | None = None, *, n: int = 16,
            requirements: EnvRequirements | None = None, geometry: str = "linf",
            loss: AttackLoss | None = None, **config) -> AttackEnv:
    """An env of ``n`` slots on ``model`` built from the policy's requirements (and context)."""
    req = requirements if requirements is not None else (
        policy.requirements() if policy is not None else EnvRequirements())
    geo = policy.context.geometry if policy is not None else make_geometry(geometry)
    if loss is None:
        loss = policy.context.attack_loss if policy is not None else AttackLoss.CE
    return AttackEnv(model, EnvConfig(geometry=geo, loss=loss, requirements=req,
                                      num_classes=10, **config), SHAPE, n)


def attack(policy: Policy, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
           env: AttackEnv | None = None, index: torch.Tensor | None = None
           ) -> tuple[AttackResult, AttackEnv]:
    """One episode of ``policy`` on (x, y) with a seeded generator; returns (record, env)."""
    env = env if env is not None else env_for(model, policy, n=len(y))
    result = run_episode(env, policy, x, y, index, generator=torch.Generator().manual_seed(seed))
    return result, env


def target_for(model: nn.Module, loss=None, *, lr: float = 0.1, n: int = 16,
               momentum: float = 0.9, weight_decay: float = 5e-4, geometry: str = "linf"):
    """A :class:`targets.target.Target` around ``model`` (constant lr) that can run episodes."""
    from learned_at.targets.losses.ce import CrossEntropy, CrossEntropyConfig
    from learned_at.targets.target import Target

    loss = loss if loss is not None else CrossEntropy(CrossEntropyConfig())
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def make_env(req: EnvRequirements) -> AttackEnv:
        return env_for(model, requirements=req, n=n, geometry=geometry, loss=loss.attack_loss)

    return Target(model, opt, sched, loss, make_env)


def run_command(main, argv: list[str]) -> int:
    """Run a command's ``main()`` (a ``hydra.main`` front end reads ``sys.argv``) with
    ``argv`` as its arguments; returns its exit status."""
    import sys

    saved = sys.argv
    sys.argv = ["prog", *argv]
    try:
        return main()
    finally:
        sys.argv = saved


def one_line(capsys, prog: str) -> str:
    """The one line ``prog`` wrote to stderr about why it stopped (no traceback around it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith(f"{prog}: ")]
    assert len(lines) == 1, err
    return lines[0]
