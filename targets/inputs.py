"""What a policy hands the target's AT step for one batch: a typed record, not a string dict."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TargetInputs:
    """Per-batch inputs of the AT loss chosen by the policy (all optional).

    Shape:
        beta, weight: (N,) on the target's device.

    Attributes:
        beta: per-sample TRADES β (LAS-TRADES); None = the loss's own β.
        weight: per-sample weights of the training loss (Dynamic AT's re-weighting).
        lookahead: take a one-step look-ahead ŵ of the target *before* its step on this batch
            (LAS-AT's and PPO's reward; :meth:`targets.target.Target.lookahead`).
        lookahead_true_class_prob: label smoothing of the look-ahead's step alone (LAS-AWP's
            reference smooths ŵ's step with 0.7 and not the target's); None = the AT loss's.
        logits_before: also return the examples' logits at the weights *before* this step, in
            eval mode without autograd (``ATLossOutput.logits_before``; LAS-AT's R1 at w).
    """

    beta: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    lookahead: bool = False
    lookahead_true_class_prob: float | None = None
    logits_before: bool = False
