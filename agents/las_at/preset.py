"""Presets of LAS-AT's three reference variants (the grids are in agents/strategy/space.py).

Variants (docs/references.md §1.5-1.7, §8; LAS-AT@ee756b7), CIFAR-10:

=========  ========  ======  ========  ===============  ==============  =========  ==========
variant    interval  (a, b)  R1 clamp  policy SGD       policy lr       label      final clip
                                                        decay (×0.1)    smoothing  to nominal ε
=========  ========  ======  ========  ===============  ==============  =========  ==========
pgd_at     20        (4, 2)  10        no momentum      none [#]_       0.7        no
trades     1         (8, 4)  20        momentum 0.9,    75 %, 90 %      none       no
                                       wd 5e-4
awp        1         (1, 1)  10        no momentum      50 %, 75 %      ŵ: 0.7     yes [#]_
=========  ========  ======  ========  ===============  ==============  =========  ==========

.. [#] the reference's milestones are never reached (§0.4): its policy lr is constant.
.. [#] LAS-AWP clips the final δ to the nominal 8/255 although the policy picks ε up to
   15/255; its published numbers were produced with the clip (§1.7, §8).

Label smoothing (the reference's ``--factor``): LAS-PGD-AT smooths the target's loss *and* the
look-ahead ŵ's step with 0.7; LAS-TRADES smooths neither; LAS-AWP trains the target on plain CE
and smooths only ŵ's step, with 0.7 (``lookahead_true_class_prob``), and reads R1 from an
eval-mode forward at w (``r1_at=w``), not from its training forward at w + v
(LAS_AWP_train_cifar10.py ``train_target_model`` and ``Get_reward``). CIFAR-100 (§8):
LAS-PGD-AT smooths with 0.6 and its policy SGD has momentum 0.9 (its grids differ too,
agents/strategy/space.py).

Digits (not a reference setting; the project's embedded default) departs in three ways, each
measured on the default run (``python -m runners.cotrain``, 30 epochs, 330 batches, one thread,
seed 0 unless said; benchmarks/fidelity.md):

* Update interval 4 (at most): the reference's 20 would give the policy 16 updates in a run.
* No label smoothing: with 0.7 the PGD-20 accuracy fell from 0.642 to 0.606 (clean 0.981 both).
* The learner: per-sample rewards (R1ᵢ, R2ᵢ, R3ᵢ) with a moving-average baseline, policy lr
  0.02. The reference's learner (one scalar reward per batch, no baseline) barely moves on
  this run: the entropy of the 315-choice strategy went from 5.752 nats to 5.672 (seed 0; 5.564,
  5.718 at seeds 1, 2) in 83 updates, and mean ε stayed at 0.200. Why: (1) the reward does
  favour stronger attacks — forcing the whole batch onto one ε value at epoch 10 gives a batch
  reward from 4.50 (ε = 0.1) to 5.96 (ε = 0.3), mostly through R1 — but a batch of 128
  independent choices moves the batch mean of ε by only ±0.006 (std), so the batch reward
  carries ≈ 0.04 of that signal against ≈ 0.22 of batch-to-batch noise; (2) without a
  baseline every update multiplies that noise by the whole reward (≈ 5, R1 ≈ 1.1 + 4·0.54 +
  2·0.89), so 92 % of the updates hit the gradient clip (mean norm 1.44) and the policy takes a
  clipped random walk. Per-sample credit and the baseline remove both (clipped updates 7 %);
  with lr 0.02 the entropy falls to 5.509 and mean ε rises to 0.230 by the last epoch, clean
  and PGD-20 accuracy unchanged (0.981 / 0.642). With lr 0.05 the policy follows R1 to the
  strongest attacks (mean ε 0.299, K 7.3, entropy 1.97): PGD-20 0.683 but clean 0.969.
"""

from __future__ import annotations

from typing import Any

from learned_at.agents.strategy.space import Variant

VARIANTS: dict[Variant, dict[str, Any]] = {
    Variant.pgd_at: {"interval": 20, "weights": (4.0, 2.0), "r1_clamp": 10.0, "momentum": 0.0,
                     "weight_decay": 0.0, "lr_milestones": (), "true_class_prob": 0.7,
                     "final_clip": False, "reward_mode": "batch", "baseline": "none",
                     "lookahead_true_class_prob": None, "r1_at": "step"},
    Variant.trades: {"interval": 1, "weights": (8.0, 4.0), "r1_clamp": 20.0, "momentum": 0.9,
                     "weight_decay": 5e-4, "lr_milestones": (0.75, 0.9), "true_class_prob": 1.0,
                     "final_clip": False, "reward_mode": "batch", "baseline": "none",
                     "lookahead_true_class_prob": None, "r1_at": "step"},
    Variant.awp: {"interval": 1, "weights": (1.0, 1.0), "r1_clamp": 10.0, "momentum": 0.0,
                  "weight_decay": 0.0, "lr_milestones": (0.5, 0.75), "true_class_prob": 1.0,
                  "final_clip": True, "reward_mode": "batch", "baseline": "none",
                  "lookahead_true_class_prob": 0.7, "r1_at": "w"},
}

#: per-data-set overrides of every variant's preset ("interval" is an upper bound).
DATA_OVERRIDES: dict[str, dict[str, Any]] = {
    "digits": {"interval": 4, "lr": 0.02, "true_class_prob": 1.0, "reward_mode": "per_sample",
               "baseline": "moving_average", "lookahead_true_class_prob": None},
}

#: per-(data set, variant) overrides (docs/references.md §0.2, §8).
DATA_VARIANT_OVERRIDES: dict[tuple[str, Variant], dict[str, Any]] = {
    ("cifar100", Variant.pgd_at): {"momentum": 0.9, "true_class_prob": 0.6},
}

DEFAULT_LR = 1e-4


def preset_settings(data: str, variant: Variant) -> dict[str, Any]:
    """Interval, reward weights, R1 clamp, policy optimiser, lr, label smoothing and final clip
    for a data set and variant."""
    settings = dict(VARIANTS[variant], lr=DEFAULT_LR)
    override = dict(DATA_OVERRIDES.get(data, {}))
    interval = override.pop("interval", None)
    settings.update(override)
    if interval is not None:
        settings["interval"] = min(settings["interval"], interval)
    settings.update(DATA_VARIANT_OVERRIDES.get((data, variant), {}))
    return settings
