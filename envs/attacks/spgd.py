"""Evaluation sPGD (Zhong et al., ICML 2024): episodes of a fixed actor on the attack env.

The maths of one step is the L0 geometry's (:meth:`envs.geometry.l0.L0.ascend`); this module
sets up what the reference's *evaluation* attack does differently from training
(CityU-MLO/sPGD ``autoattack/spgd.py``, docs/references.md §6.2, §6.4):

* one gradient mode for the whole attack (``projected`` or ``unprojected``), patience 3;
* the adaptive loss: CE, or the logit margin for samples whose margin is below 0.5
  (:attr:`envs.attack_loss.AttackLoss.CE_MARGIN`). This is the evaluation loss of sPGD's
  first commit (a356d0c), removed in f15d2a5: at 6624853, the commit the rest of this module
  follows, the evaluation ascends plain CE (its ``check_low_confidence`` is defined but
  unused). A departure kept on purpose — the margin keeps pushing samples that CE has
  almost fooled — and ``spgd_attack(..., loss=AttackLoss.CE)`` is the 6624853 attack
  (docs/references.md §6.2);
* only correctly classified samples are attacked (the others keep x), and a sample stops at
  the first iterate that is misclassified (the env observes every new iterate and the actor
  stops it), so the returned example is that iterate.

Per sample the start is sPGD's random one (U(−1, 1) magnitudes, N(0, 1) mask logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from learned_at.envs.attack_env import AttackAction, AttackEnv, EnvConfig, Obs, target_mode
from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.episode import run_episode
from learned_at.envs.geometry.base import Scalar
from learned_at.envs.geometry.l0 import L0, SparseGradient
from learned_at.envs.requirements import EnvRequirements

EVAL_PATIENCE = 3
"""Unchanged-mask steps before the mask logits are re-drawn (reference evaluation)."""
EVAL_ALPHA = 0.25
"""Magnitude step as a fraction of the magnitude bound (reference)."""


@dataclass
class StopOnSuccess:
    """Actor: the same sPGD for every sample; stops a sample once its newest iterate is
    misclassified (needs ``observe_after_step``).

    Attributes:
        geometry: the L0 geometry of the episode (random start).
        k: (N,) per-sample pixel budgets of the batch it attacks.
        steps: iterations.
        alpha: magnitude step.
    """

    geometry: L0
    k: torch.Tensor
    steps: int
    alpha: float = EVAL_ALPHA

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        if t:
            return AttackAction(stop=~obs["correct"][:self.k.shape[0]])
        x = obs["x"][:self.k.shape[0]]
        return AttackAction(eps=self.k, alpha=torch.full_like(self.k, self.alpha),
                            budget=torch.full_like(self.k, self.steps, dtype=torch.long),
                            init=self.geometry.random_delta(x, self.k, generator))


def spgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, geometry: L0,
                k: Scalar, steps: int, gradient: SparseGradient | str,
                patience: int = EVAL_PATIENCE, loss: AttackLoss = AttackLoss.CE_MARGIN,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted evaluation sPGD (module docstring); the model runs in eval mode.

    Shape:
        x: (N, C, H, W) in [0, 1]; y: (N,) int64; k: float or (N,) pixels.
        Returns x_adv (N, C, H, W) with at most k changed pixels per sample.
    """
    geo = geometry.with_options(gradient=SparseGradient(gradient), patience=patience)
    k_t = torch.as_tensor(k, dtype=x.dtype, device=x.device).expand(x.shape[0]).clone()
    x_adv = x.clone()
    with target_mode(model, False):
        with torch.no_grad():
            idx = (model(x).argmax(1) == y).nonzero().squeeze(1)  # host sync: attacked set
        if idx.numel() == 0 or steps < 1:
            return x_adv
        config = EnvConfig(geometry=geo, loss=loss,
                           requirements=EnvRequirements(observe_after_step=True))
        image_shape = (x.shape[1], x.shape[2], x.shape[3])  # (C, H, W)
        env = AttackEnv(model, config, image_shape, num_envs=idx.numel(),
                        max_budget=steps)
        actor = StopOnSuccess(geo, k_t.index_select(0, idx), steps)
        adv = run_episode(env, actor, x.index_select(0, idx), y.index_select(0, idx),
                          generator=generator, max_steps=steps + 1).x_adv
    return x_adv.index_copy_(0, idx, adv)
