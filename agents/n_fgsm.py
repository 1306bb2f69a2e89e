"""N-FGSM (de Jorge et al., NeurIPS 2022, "Make Some Noise"): noise around the clean point, one
sign step, no projection back onto the ε-ball.

x_adv = clip_[0,1](x + η + α·sign(∇ₓℓ(x + η))), η ~ U(−k·ε, k·ε) per coordinate, with the
paper's defaults k = 2 and α = ε. The perturbation can reach (1 + k)·ε: the paper finds that
the strong noise together with *not* clipping to the ε-ball is what avoids catastrophic
overfitting at large ε, at the cost of one forward/backward pass like FGSM-RS.

In this framework the step is an ordinary one-step episode whose projection radius is
(1 + k)·ε (never active: |η| ≤ k·ε and the step adds at most α = ε) and whose start is the
geometry's uniform random start in the k·ε ball (:meth:`envs.geometry.base.Geometry.random_delta`,
which keeps x + η inside the image box; the reference clips only the final example). For a
geometry other than L∞ the same recipe reads "noise in the k·ε ball, one ascent step of size
α". The distributions record the projection radius as ``eps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from learned_at.agents.base import Policy, PolicyConfig, register_policy
from learned_at.agents.fixed import uniform_action
from learned_at.envs.attack_env import AttackAction, Obs
from learned_at.envs.options import NON_NEGATIVE, Limit, setting


@dataclass(frozen=True)
class NFgsmConfig(PolicyConfig):
    """N-FGSM: uniform noise of ``noise``·ε, one step of ``alpha_ratio``·ε, no ε-ball clip."""

    limits: ClassVar[dict[str, Limit]] = {"noise": NON_NEGATIVE, "alpha_ratio": NON_NEGATIVE}

    name: str = "n_fgsm"
    noise: float = setting(2.0, "k: the noise is uniform in the k·ε ball (the paper's 2).")
    alpha_ratio: float = setting(1.0, "step size α as a multiple of ε (the paper's 1).")


@register_policy(NFgsmConfig)
class NFgsm(Policy):
    """One step from uniform noise of radius k·ε, projected onto (1 + k)·ε (inactive)."""

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        if t:
            return None
        eps, geometry = self.context.eps, self.context.geometry
        noise = geometry.scaled_budget(eps, self.config.noise)
        init = geometry.random_delta(obs["x"], noise, generator)
        alpha = geometry.step_size(eps, self.config.alpha_ratio)
        return uniform_action(obs, geometry.scaled_budget(eps, 1.0 + self.config.noise), alpha,
                              1, init)
