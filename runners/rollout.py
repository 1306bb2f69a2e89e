"""Drive one attack episode: a policy acting on the attack env until every sample is done."""

from __future__ import annotations

from typing import Protocol

import torch

from envs.attack_env import AttackAction, AttackEnv, Obs


class Actor(Protocol):
    """Anything with the policy's ``act`` (see :class:`agents.base.Policy`)."""

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        ...


def run_attack(env: AttackEnv, policy: Actor, x: torch.Tensor, y: torch.Tensor,
               index: torch.Tensor | None = None, generator: torch.Generator | None = None,
               max_steps: int = 10_000, offsets: torch.Tensor | None = None,
               flipped: torch.Tensor | None = None) -> torch.Tensor:
    """Reset ``env`` with the batch, let ``policy`` act until no sample moves; return x_adv.

    The loop ends on the first step in which no sample was active (its size is known on the
    host from the env's compaction, so ending costs no extra sync).

    ``offsets`` / ``flipped`` (the loader's augmentation of ``x``) are passed to the env, which
    puts them in the observation.

    Shape:
        x: (N, C, H, W); y, index, flipped: (N,); offsets: (N, 2). Returns x_adv (N, C, H, W) (with graph only in the
        env's differentiable mode).
    """
    obs, _ = env.reset(options={"x": x, "y": y, "index": index, "offsets": offsets,
                                "flipped": flipped})
    for t in range(max_steps):
        action = policy.act(obs, t, generator)
        obs, _, _, _, info = env.step(action if action is not None else AttackAction())
        if info["num_active"] == 0:
            break
    return env.adversarial_batch()
