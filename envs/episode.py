"""Drive one attack episode: an actor (a policy) acting on the attack env until every sample is
done; the episode's record is the env's frozen :class:`~envs.result.AttackResult`."""

from __future__ import annotations

from typing import Protocol

import torch

from learned_at.envs.attack_env import AttackAction, AttackEnv, Obs
from learned_at.envs.result import AttackResult


class Actor(Protocol):
    """Anything with the policy's ``act`` (see :class:`agents.base.Policy`)."""

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        ...


def run_episode(env: AttackEnv, actor: Actor, x: torch.Tensor, y: torch.Tensor,
                index: torch.Tensor | None = None, *, offsets: torch.Tensor | None = None,
                flipped: torch.Tensor | None = None, generator: torch.Generator | None = None,
                max_steps: int = 10_000) -> AttackResult:
    """Reset ``env`` with the batch, let ``actor`` act until no sample moves; return the record.

    The loop ends on the first step in which no sample was active, or as soon as the env knows
    without a sync that none can move again (uniform budgets, no stops).

    Args:
        env: the attack env (its ``num_envs`` ≥ the batch size).
        actor: chooses the per-sample settings at t = 0 and may change or stop them later.
        x: (N, C, H, W) clean batch in [0, 1]; y: (N,) labels; index: (N,) data-set indices.
        offsets, flipped: (N, 2), (N,) the loader's augmentation of ``x``, if any.
        generator: the episode's random generator (random starts, the geometry's draws).
        max_steps: safety bound on the number of env steps.

    Returns:
        :class:`~envs.result.AttackResult` (x_adv with a graph only in differentiable mode).
    """
    obs, _ = env.reset(options={"x": x, "y": y, "index": index, "offsets": offsets,
                                "flipped": flipped, "generator": generator})
    for t in range(max_steps):
        action = actor.act(obs, t, generator)
        obs, _, _, _, info = env.step(action if action is not None else AttackAction())
        if info["num_active"] == 0 or info["episode_done"]:
            break
    return env.result()
