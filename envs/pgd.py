"""Reference PGD with restarts (evaluation, look-ahead rewards), built on the same pure maths.

This is the fixed-parameter attack used to *measure* robustness; training attacks go through
:class:`envs.attack_env.AttackEnv`, where policies choose the parameters. Both share
:mod:`envs.threat` and :mod:`envs.attack_loss`, so the maths exists once.
"""

from __future__ import annotations

import torch
from torch import nn

from envs.attack_env import target_mode
from envs.attack_loss import AttackLoss, attack_loss
from envs.threat import Scalar, ThreatModel


def _pgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
             eps: Scalar, alpha: Scalar, steps: int, loss: AttackLoss, random_start: bool,
             generator: torch.Generator | None) -> torch.Tensor:
    """One PGD run from a (random) start; returns δ (N, C, H, W)."""
    delta = threat.random_init(x, eps, generator) if random_start else torch.zeros_like(x)
    for _ in range(steps):
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            per_sample = attack_loss(loss, model(x + d), y)
            (grad,) = torch.autograd.grad(per_sample.sum(), d)
        delta = threat.project(threat.step(delta, grad, alpha), x, eps)
    return delta.detach()


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel,
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
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(x.shape[0])
    alpha_t = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).expand(x.shape[0])
    with target_mode(model, False):
        for _ in range(restarts):
            idx = robust.nonzero().squeeze(1)  # host sync once per restart
            if idx.numel() == 0:
                break
            xs, ys = x.index_select(0, idx), y.index_select(0, idx)
            delta = _pgd_run(model, xs, ys, threat, eps_t.index_select(0, idx),
                             alpha_t.index_select(0, idx), steps, loss, random_start, generator)
            with torch.no_grad():
                fooled = model(xs + delta).argmax(1) != ys
            x_adv.index_copy_(0, idx, xs + delta)
            robust.index_fill_(0, idx[fooled], False)
    return x_adv


def fgsm_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel,
                eps: Scalar) -> torch.Tensor:
    """One step of size ε from the clean point (no random start). Returns x_adv (N, C, H, W)."""
    with target_mode(model, False):
        return x + _pgd_run(model, x, y, threat, eps, eps, 1, AttackLoss.CE, False, None)
