"""Per-sample attack objectives (what the inner maximisation ascends).

All functions return one value per sample, shape (N,), so that the gradient of their *sum*
is the per-sample gradient (the scale FOSC and per-sample stopping rules assume).
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F


class AttackLoss(str, Enum):
    """Closed set of attack objectives."""

    CE = "ce"          # cross-entropy on the true label (PGD-AT, FGSM, LAS-AT)
    KL = "kl"          # KL(p_clean ‖ p_adv) (TRADES' inner maximisation)
    MARGIN = "margin"  # CW-style margin max_{j≠y} z_j − z_y (evaluation)
    CE_MARGIN = "ce_margin"  # CE, or the margin where z_y − max_{j≠y} z_j < 0.5 (sPGD evaluation)


LOW_CONFIDENCE_MARGIN = 0.5
"""sPGD's evaluation switches a sample to the margin loss below this logit margin: the adaptive
loss of CityU-MLO/sPGD's first commit a356d0c (``autoattack/spgd.py``), removed in f15d2a5; at
6624853 ``check_low_confidence`` is defined but the evaluation ascends plain CE
(docs/references.md §6.2)."""


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best wrong logit minus the true logit. (N, K), (N,) -> (N,)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return wrong.amax(1) - true


def kl_loss(logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) ‖ softmax(adv)) per sample. (N, K), (N, K) -> (N,)."""
    log_p_clean = F.log_softmax(clean_logits, 1)
    return (log_p_clean.exp() * (log_p_clean - F.log_softmax(logits, 1))).sum(1)


def attack_loss(kind: AttackLoss, logits: torch.Tensor, y: torch.Tensor,
                clean_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Evaluate the chosen objective per sample.

    Shape:
        logits: (N, K); y: (N,) int64; clean_logits: (N, K), required for ``KL``. Returns (N,).
    """
    if kind is AttackLoss.CE:
        return F.cross_entropy(logits, y, reduction="none")
    if kind is AttackLoss.MARGIN:
        return margin_loss(logits, y)
    if kind is AttackLoss.CE_MARGIN:
        margin = margin_loss(logits, y)
        low = (-margin < LOW_CONFIDENCE_MARGIN).detach()
        return torch.where(low, margin, F.cross_entropy(logits, y, reduction="none"))
    if clean_logits is None:
        raise ValueError("the KL attack loss needs the clean logits")
    return kl_loss(logits, clean_logits)
