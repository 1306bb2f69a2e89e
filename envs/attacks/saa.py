"""Sparse-AutoAttack (sAA; Zhong et al.): the per-example worst case of a cascade.

Stages, each run only on the examples that are still classified correctly (CityU-MLO/sPGD
``autoattack/saa.py``, docs/references.md §6.4):

1. sPGD, untargeted, projected gradient (``spgd_p``);
2. sPGD, untargeted, unprojected gradient (``spgd_u``);
3. Sparse-RS, the black-box random search (``sparse_rs``; 10 000 queries, p_init 0.8, CE).

An example is robust only if it survives every stage. Every stage's examples are checked
independently: our eval-mode forward decides what is fooled, and an example with more than k
changed pixels or outside [0, 1] raises instead of being counted. The reference's sPGD
iterations are 300 by default (``evaluate.py``; its README uses 10 000 on CIFAR); here
``steps``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from learned_at.envs.attack_env import target_mode
from learned_at.envs.attacks.sparse_rs import sparse_rs
from learned_at.envs.attacks.spgd import spgd_attack
from learned_at.envs.geometry.base import Scalar
from learned_at.envs.geometry.l0 import L0, SparseGradient, budget_pixels, changed_pixels

SAA_STAGES = ("spgd_p", "spgd_u", "sparse_rs")
"""The cascade's stages, in order."""
DEFAULT_SPGD_STEPS = 300
"""sPGD iterations per stage (the reference's ``evaluate.py`` default)."""
DEFAULT_RS_QUERIES = 10_000
"""Sparse-RS queries (the reference's default)."""


@dataclass(frozen=True)
class SparseAutoAttackResult:
    """Outcome of sAA on one batch.

    Attributes:
        x_adv: (N, C, H, W) the example of the stage that fooled each sample (x if none did).
        robust: (N,) bool, correct after every stage.
        stages: stage name -> (N,) bool, correct after the cascade up to that stage.
        seconds: stage name -> wall time of the stage (each stage ends with a host sync).
    """

    x_adv: torch.Tensor
    robust: torch.Tensor
    stages: dict[str, torch.Tensor]
    seconds: dict[str, float]


@torch.no_grad()
def predict_labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode predicted labels (N,) (the model's mode is restored)."""
    with target_mode(model, False):
        return model(x).argmax(1)


def check_sparse(x: torch.Tensor, x_adv: torch.Tensor, k: Scalar, attack: str) -> None:
    """Raise unless every example has at most k changed pixels and lies in [0, 1]."""
    too_many = changed_pixels(x_adv - x) > budget_pixels(k, x).to(x.dtype)
    outside = (x_adv < 0) | (x_adv > 1)
    if bool(too_many.any() | outside.any()):  # host sync: one per stage
        raise RuntimeError(f"{attack} returned examples outside the L0 budget or [0, 1]")


def sparse_rs_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: Scalar, *,
                     queries: int = DEFAULT_RS_QUERIES,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Sparse-RS on the correctly classified examples of a batch (the others keep x), querying
    only the eval-mode logits of ``model``. (N, C, H, W) -> (N, C, H, W)."""
    x_adv = x.clone()
    idx = (predict_labels(model, x) == y).nonzero().squeeze(1)  # host sync: attacked set
    if idx.numel() == 0:
        return x_adv
    k_t = torch.as_tensor(k, dtype=x.dtype, device=x.device).expand(x.shape[0])
    with target_mode(model, False):
        adv, _ = sparse_rs(model, x.index_select(0, idx), y.index_select(0, idx),
                           k_t.index_select(0, idx), queries=queries, generator=generator)
    return x_adv.index_copy_(0, idx, adv)


def sparse_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: Scalar, *,
                      geometry: L0, steps: int = DEFAULT_SPGD_STEPS,
                      queries: int = DEFAULT_RS_QUERIES,
                      generator: torch.Generator | None = None) -> SparseAutoAttackResult:
    """The sAA cascade on one batch (module docstring).

    Shape:
        x: (N, C, H, W) in [0, 1]; y: (N,) int64; k: float or (N,) pixels.
    """
    k_t = torch.as_tensor(k, dtype=x.dtype, device=x.device).expand(x.shape[0]).clone()
    x_adv = x.clone()
    robust = predict_labels(model, x) == y
    stages: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for stage in SAA_STAGES:
        t0 = time.perf_counter()
        idx = robust.nonzero().squeeze(1)  # host sync: the survivors
        if idx.numel():
            xs, ys, ks = x.index_select(0, idx), y.index_select(0, idx), k_t.index_select(0, idx)
            if stage == "sparse_rs":
                adv = sparse_rs_attack(model, xs, ys, ks, queries=queries, generator=generator)
            else:
                gradient = (SparseGradient.projected if stage == "spgd_p"
                            else SparseGradient.unprojected)
                adv = spgd_attack(model, xs, ys, geometry=geometry, k=ks, steps=steps,
                                  gradient=gradient, generator=generator)
            check_sparse(xs, adv, ks, stage)
            fooled = predict_labels(model, adv) != ys
            x_adv.index_copy_(0, idx[fooled], adv[fooled])
            robust = robust.index_fill(0, idx[fooled], False)
        stages[stage] = robust.clone()
        seconds[stage] = time.perf_counter() - t0
    return SparseAutoAttackResult(x_adv, robust, stages, seconds)
