"""Evaluation PGD (and FGSM) with restarts: episodes of a fixed actor on the attack env.

This is the fixed-parameter attack used to *measure* robustness (and LAS-AT's look-ahead
reward); training attacks are episodes of the policies on the same env, so there is one PGD
loop in the project (:meth:`envs.attack_env.AttackEnv.step`).

Two restart rules:

* :func:`pgd_attack` (evaluation): each restart attacks only the samples no earlier restart
  has fooled, in eval mode; per sample the result is the first fooling example, else the last
  restart's — the per-example worst case over restarts, at the cost of the robust ones only.
* :func:`pgd_attack_max_loss` (the LAS-AT reference's ``attack_pgd``, docs/references.md §8): every
  restart attacks every sample; a sample stops moving once it is misclassified (per-step early
  stop); per sample the example with the largest final loss over restarts is kept; the model
  may run in train mode (BatchNorm batch statistics, running statistics updated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from learned_at.envs.attack_env import AttackAction, AttackEnv, EnvConfig, Obs, target_mode
from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.episode import run_episode
from learned_at.envs.geometry.base import Geometry, Scalar
from learned_at.envs.requirements import BnMode, EnvRequirements


@dataclass
class FixedAttack:
    """An actor that gives every sample the same kind of attack: ε, α, K and a random start.

    Attributes:
        geometry: where the random start is drawn.
        eps, alpha: (N,) per-sample budget and step size of the batch it will attack.
        steps: iterations K.
        random_start: start uniformly in the ball (else at the clean input).
        early_stop: stop a sample as soon as its newest iterate is misclassified (needs an env
            that observes every new iterate, ``observe_after_step``).
    """

    geometry: Geometry
    eps: torch.Tensor
    alpha: torch.Tensor
    steps: int
    random_start: bool = True
    early_stop: bool = False

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        if t:
            return AttackAction(stop=~obs["correct"]) if self.early_stop else None
        x = obs["x"][:self.eps.shape[0]]
        init = self.geometry.random_delta(x, self.eps, generator) if self.random_start else None
        return AttackAction(eps=self.eps, alpha=self.alpha, init=init,
                            budget=torch.full_like(self.eps, self.steps, dtype=torch.long))


def _per_sample_tensor(value: Scalar, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).expand(x.shape[0])


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, geometry: Geometry,
               eps: Scalar, alpha: Scalar, steps: int, restarts: int = 1,
               loss: AttackLoss = AttackLoss.CE, random_start: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted PGD; each restart attacks only the samples no earlier restart has fooled.

    The target runs in eval mode (restored afterwards). Per sample, the result is the first
    restart's example that is misclassified, else the last restart's example.

    Shape:
        x: (N, C, H, W) in [0, 1]; y: (N,) int64; eps/alpha: float or (N,).
        Returns x_adv (N, C, H, W).
    """
    x_adv = x.clone()
    robust = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    eps_t, alpha_t = _per_sample_tensor(eps, x), _per_sample_tensor(alpha, x)
    config = EnvConfig(geometry=geometry, loss=loss)
    image_shape = (x.shape[1], x.shape[2], x.shape[3])  # (C, H, W)
    with target_mode(model, False):
        for _ in range(restarts):
            idx = robust.nonzero().squeeze(1)  # host sync once per restart
            if idx.numel() == 0:
                break
            xs, ys = x.index_select(0, idx), y.index_select(0, idx)
            actor = FixedAttack(geometry, eps_t.index_select(0, idx),
                                alpha_t.index_select(0, idx), steps, random_start)
            env = AttackEnv(model, config, image_shape, num_envs=xs.shape[0],
                            max_budget=max(steps, 1))
            adv = run_episode(env, actor, xs, ys, generator=generator).x_adv
            with torch.no_grad():
                fooled = model(adv).argmax(1) != ys
            x_adv.index_copy_(0, idx, adv)
            robust.index_fill_(0, idx[fooled], False)
    return x_adv


def pgd_attack_max_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                        geometry: Geometry, eps: Scalar, alpha: Scalar, steps: int,
                        restarts: int = 1, train_bn: bool = False, early_stop: bool = True,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD with random starts, per-step early stop and max-loss restarts (LAS-AT's reference).

    Every restart attacks the whole batch from a uniform start; with ``early_stop`` a sample
    stops moving once an iterate is misclassified (the reference also freezes samples already
    misclassified at the start; here the first step is always taken). The kept example per
    sample is the one with the largest CE at its final iterate over the restarts. With
    ``train_bn`` the model attacks in train mode — batch statistics of the samples still
    moving, running statistics updated at every step — as the reference's reward does with
    its look-ahead model; the caller's mode is restored.

    Shape:
        x: (N, C, H, W) in [0, 1]; y: (N,) int64; eps/alpha: float or (N,).
        Returns x_adv (N, C, H, W).
    """
    eps_t, alpha_t = _per_sample_tensor(eps, x), _per_sample_tensor(alpha, x)
    config = EnvConfig(geometry=geometry, loss=AttackLoss.CE,
                       bn_mode=BnMode.train if train_bn else BnMode.eval,
                       requirements=EnvRequirements(observe_after_step=True, observe_final=True))
    env = AttackEnv(model, config, (x.shape[1], x.shape[2], x.shape[3]), num_envs=x.shape[0],
                    max_budget=max(steps, 1))
    actor = FixedAttack(geometry, eps_t, alpha_t, steps, early_stop=early_stop)
    best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device)
    x_adv = x.clone()
    for _ in range(restarts):
        result = run_episode(env, actor, x, y, generator=generator)
        better = result.loss >= best_loss  # loss of each sample's final iterate
        x_adv = torch.where(better.view(-1, *([1] * (x.dim() - 1))), result.x_adv, x_adv)
        best_loss = torch.maximum(best_loss, result.loss)
    return x_adv


def fgsm_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, geometry: Geometry,
                eps: Scalar) -> torch.Tensor:
    """One step of size ε from the clean point (no random start). Returns x_adv (N, C, H, W)."""
    return pgd_attack(model, x, y, geometry=geometry, eps=eps,
                      alpha=geometry.step_size(eps, 1.0), steps=1,
                      random_start=False)
