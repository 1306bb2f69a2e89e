"""LAS-AT (Jia et al., CVPR 2022): a strategy network picks each sample's attack, by REINFORCE.

Per batch: the strategy network reads the clean images and samples, per sample, ε, α (step
size), K (iterations) and, for LAS-TRADES, β from one categorical head each
(:mod:`agents.las_at.net`, grids from :mod:`agents.strategy.space`); the env attacks every
sample with its own strategy, costing Σᵢ Kᵢ sample-gradients thanks to its active-set
compaction (the reference forwards the whole batch max Kᵢ times, docs/references.md §1.4). Every
``interval`` batches the policy learns: the target takes its look-ahead ŵ before its step
(``TargetInputs.lookahead``), reward = clamp(R1, 0, c) + a·R2 + b·R3
(:mod:`agents.strategy.lookahead`), loss = −mean_i(Σ_h log π_h(a_{h,i} | x_i) · reward), SGD,
gradient-norm clip 1.0. ``at_loss=ce`` gives LAS-PGD-AT, ``at_loss=trades`` LAS-TRADES,
``at_loss=awp`` LAS-AWP; their settings are in :mod:`agents.las_at.preset`.

Departures from the reference code (LAS-AT@ee756b7), each on purpose:

* The reward rollout reuses the training action and its examples (the reference samples a
  second action for the reward with the network in train mode and attacks the batch again).
  On learning batches the network samples in train mode with autograd (as the reference's
  reward rollout), on other batches in eval mode without autograd (as its training action).
  This saves one attack per learning batch; the estimator is still REINFORCE on the action
  that was taken.
* The start point is uniform in each sample's own ε-ball (the reference starts in the nominal
  8/255 ball whatever ε the policy chose). LAS-TRADES starts at x + 0.001·N(0, 1) (reference;
  the TRADES loss asks the env for that start).
* R1 is the CE of f_w on the examples taken from the target step's own forward (train-mode
  BatchNorm; the reference runs an extra eval-mode forward), preset for LAS-PGD-AT;
  ``r1_at=w`` is the reference's extra eval-mode forward at w, preset for LAS-AWP, whose step
  forward is at the perturbed weights w + v. LAS-TRADES' R1 is the TRADES loss. R1 is never
  label-smoothed (the reference's R1 is plain CE).
* LAS-AWP: no normalisation mismatch between reward and training (models normalise inside,
  if at all; the reference normalised the attack and training but not the reward, §1.8).

Reference behaviour and the paper, each a switch (docs/references.md §8):

* Label smoothing (``true_class_prob``; preset 0.7 for LAS-PGD-AT on CIFAR-10, 0.6 on
  CIFAR-100) reaches the target's step *and* the look-ahead ŵ's step, as the reference's
  ``--factor``; ``lookahead_true_class_prob`` smooths the look-ahead's step alone (preset 0.7
  for LAS-AWP, whose reference trains the target on plain CE and ŵ with ``--factor 0.7``).
* ``reward_form=accuracy`` (reference code): R2, R3 are ŵ's robust and clean batch accuracies;
  ``ce`` is the paper's definition, L2 = −CE(f_ŵ(x_adv), y), L3 = −CE(f_ŵ(x), y). Either way
  a·R2 and b·R3 are clamped to [−c, c] with c the R1 clamp, as the reference.
* ``reward_attack=eval`` (default): R2's PGD runs ŵ in eval mode (the evaluation PGD);
  ``reference``: ŵ in train mode, per-step early stop, max-loss restarts
  (:mod:`agents.strategy.lookahead`).
* ``final_clip`` (preset on for LAS-AWP only): the final δ is clipped to the nominal ε, so a
  policy ε above it only changes the intermediate projections — the reference's LAS-AWP, whose
  published numbers were produced with it.
* ``reward_mode=per_sample`` (R1ᵢ, R2ᵢ, R3ᵢ per sample) and ``baseline=moving_average``
  (advantage = reward − EMA of past rewards) are departures, off in the reference presets
  (the faithful form is a single scalar reward per batch, no baseline) and on in the digits
  preset, where the faithful learner barely leaves the uniform distribution
  (agents/las_at/preset.py has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from learned_at.agents.base import (Policy, PolicyConfig, PolicyContext, PresetContext,
                                   StepInfo, register_policy)
from learned_at.agents.las_at.net import (StrategyNet, Trunk, categorical_entropy,
                                          categorical_log_prob, resolve_trunk,
                                          sample_categorical)
from learned_at.agents.las_at.preset import preset_settings
from learned_at.agents.strategy.lookahead import (LookaheadConfig, RewardAttack, RewardTerms,
                                                  lookahead_terms)
from learned_at.agents.strategy.space import (Variant, make_strategy_space, resolve_variant,
                                              resolved_grids)
from learned_at.envs.attack_env import AttackAction, Obs
from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.options import (setting, COUNT, FINITE, FRACTION, MOMENTUM, NON_NEGATIVE,
                                     NON_NEGATIVE_INT, POSITIVE, PROBABILITY, Limit, parse_option)
from learned_at.envs.result import AttackResult
from learned_at.targets.distributed import all_reduce_mean, average_gradients
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import ATLossOutput
from learned_at.targets.target import TargetView


class RewardMode(str, Enum):
    """One scalar reward per batch (reference) or one per sample (departure)."""

    batch = "batch"
    per_sample = "per_sample"


class Baseline(str, Enum):
    """REINFORCE baseline: none (reference) or an EMA of past rewards (departure)."""

    none = "none"
    moving_average = "moving_average"


class RewardForm(str, Enum):
    """R2/R3 as ŵ's accuracies (reference code) or as −CE of ŵ (the paper's L2/L3)."""

    accuracy = "accuracy"
    ce = "ce"


class R1At(str, Enum):
    """Where R1 reads the target: the step's own forward, or an eval-mode forward at w."""

    step = "step"
    w = "w"


@dataclass(frozen=True)
class LasAtConfig(PolicyConfig):
    """LAS-AT strategy policy; ``None`` fields take the preset (agents/las_at/preset.py)."""

    limits: ClassVar[dict[str, Limit]] = {
        "eps_grid": NON_NEGATIVE, "alpha_grid": NON_NEGATIVE, "steps_grid": NON_NEGATIVE_INT,
        "beta_grid": NON_NEGATIVE, "interval": COUNT, "lr": POSITIVE, "momentum": MOMENTUM,
        "weight_decay": NON_NEGATIVE, "lr_milestones": FRACTION, "grad_clip": POSITIVE,
        "reward_weights": FINITE, "r1_clamp": POSITIVE, "baseline_momentum": MOMENTUM,
        "reward_pgd_steps": NON_NEGATIVE_INT, "reward_pgd_restarts": COUNT,
        "true_class_prob": PROBABILITY, "lookahead_true_class_prob": PROBABILITY}

    name: str = setting("las_at", "registry id.")
    variant: Variant = setting(Variant.auto, "auto (from the run's at_loss: ce -> pgd_at, trades, "
                                             "awp), pgd_at, trades or awp: selects grids, "
                                             "interval, reward weights, R1 clamp, optimiser.")
    trunk: Trunk = setting(Trunk.auto, "strategy-network trunk: auto (resnet18 for >= 32x32, else "
                                       "small_cnn), resnet18 (reference) or small_cnn.")
    eps_grid: list[float] | None = setting(None, "ε values (input units); None = preset.")
    alpha_grid: list[float] | None = setting(None, "step sizes (input units); None = preset.")
    steps_grid: list[int] | None = setting(None, "iteration counts; None = preset.")
    beta_grid: list[float] | None = setting(None, "TRADES β values (variant trades only); None = "
                                                  "preset {5..9}.")
    interval: int | None = setting(None, "learn every interval batches (reference k); None = "
                                         "preset (20 / 1 / 1).")
    lr: float | None = setting(None, "policy SGD learning rate; None = preset (1e-4; digits "
                                     "0.02).")
    momentum: float | None = setting(None, "policy SGD momentum; None = preset (0; trades 0.9).")
    weight_decay: float | None = setting(None, "policy SGD weight decay; None = preset (0; trades "
                                               "5e-4).")
    lr_milestones: list[float] | None = setting(None, "fractions of training where the policy lr "
                                                      "is multiplied by 0.1; None = preset "
                                                      "(pgd_at none, trades [0.75, 0.9], awp "
                                                      "[0.5, 0.75]).")
    grad_clip: float = setting(1.0, "max gradient norm of the strategy network per update.")
    reward_weights: list[float] | None = setting(None, "(a, b) of reward = R1 + a·R2 + b·R3; None "
                                                       "= preset.")
    r1_clamp: float | None = setting(None, "upper clamp of R1 (the AT loss); None = preset (10; "
                                           "trades 20).")
    reward_mode: RewardMode | None = setting(None, "batch (one scalar per batch, reference) or "
                                                   "per_sample (departure); None = preset (batch; "
                                                   "digits per_sample).")
    baseline: Baseline | None = setting(None, "none (reference) or moving_average (departure); "
                                              "None = preset (none; digits moving_average).")
    baseline_momentum: float = setting(0.9, "EMA factor of the moving-average baseline.")
    reward_pgd_steps: int = setting(10, "PGD iterations of R2 (reference 10).")
    reward_pgd_restarts: int = setting(2, "PGD restarts of R2 (reference 2).")
    reward_form: RewardForm = setting(RewardForm.accuracy, "accuracy (R2, R3 = ŵ's robust/clean "
                                                           "accuracy; reference code) or ce (−CE "
                                                           "of ŵ on the PGD/clean inputs; the "
                                                           "paper's L2, L3).")
    reward_attack: RewardAttack = setting(RewardAttack.eval, "R2's PGD: eval (ŵ in eval mode) or "
                                                             "reference (ŵ in train mode, "
                                                             "per-step early stop, max-loss "
                                                             "restarts).")
    true_class_prob: float | None = setting(None, "label smoothing of the target's step and of "
                                                  "the look-ahead ŵ's step (probability on the "
                                                  "true class); None = preset (LAS-PGD-AT 0.7, "
                                                  "CIFAR-100 0.6; LAS-TRADES/LAS-AWP: the AT "
                                                  "loss's own setting); 1.0 = off.")
    final_clip: bool | None = setting(None, "clip the final δ to the nominal ε (LAS-AWP's "
                                            "reference); None = preset (on for awp only).")
    lookahead_true_class_prob: float | None = setting(
        None, "label smoothing of the look-ahead ŵ's step alone; None = preset (LAS-AWP 0.7, "
              "the reference's; else the target step's, true_class_prob).")
    r1_at: R1At | None = setting(None, "R1's forward: step (the target step's own, train-mode "
                                       "BatchNorm, at w + v under AWP) or w (an extra eval-mode "
                                       "forward at w before the step, the reference's); None = "
                                       "preset (awp: w, else step).")


    target_smoothing: ClassVar[bool] = True
    follows_smoothing: ClassVar[tuple[str, ...]] = ("lookahead_true_class_prob",)

    def resolve(self, preset: PresetContext) -> LasAtConfig:
        """Every ``None`` / ``auto`` field from the variant's and data set's preset
        (agents/las_at/preset.py) and the strategy grids (agents/strategy/space.py)."""
        variant = resolve_variant(self.variant, preset.at_loss_name)
        s = preset_settings(preset.data, variant)
        grids: dict[str, Any] = resolved_grids(preset.geometry, preset.data, variant, preset.eps,
                               eps_grid=self.eps_grid, alpha_grid=self.alpha_grid,
                               steps_grid=self.steps_grid, beta_grid=self.beta_grid)
        return replace(
            self, variant=variant, trunk=resolve_trunk(self.trunk, preset.image_shape), **grids,
            interval=int(_pick(self.interval, s["interval"])),
            lr=float(_pick(self.lr, s["lr"])),
            momentum=float(_pick(self.momentum, s["momentum"])),
            weight_decay=float(_pick(self.weight_decay, s["weight_decay"])),
            lr_milestones=[float(m) for m in _pick(self.lr_milestones, s["lr_milestones"])],
            reward_weights=[float(w) for w in _pick(self.reward_weights, s["weights"])],
            r1_clamp=float(_pick(self.r1_clamp, s["r1_clamp"])),
            reward_mode=parse_option(RewardMode, _pick(self.reward_mode, s["reward_mode"]),
                                     "policy.reward_mode"),
            baseline=parse_option(Baseline, _pick(self.baseline, s["baseline"]),
                                  "policy.baseline"),
            true_class_prob=float(_pick(self.true_class_prob, s["true_class_prob"])),
            final_clip=bool(_pick(self.final_clip, s["final_clip"])),
            lookahead_true_class_prob=_pick(self.lookahead_true_class_prob,
                                            s["lookahead_true_class_prob"]),
            r1_at=parse_option(R1At, _pick(self.r1_at, s["r1_at"]), "policy.r1_at"))


def _pick(value: Any, preset: Any) -> Any:
    return preset if value is None else value


@register_policy(LasAtConfig)
class LasAt(Policy):
    """Strategy network + REINFORCE on the look-ahead reward (see module docstring)."""

    baseline_value: torch.Tensor  # buffer: () moving-average baseline
    baseline_ready: torch.Tensor  # buffer: () bool, the baseline holds a value

    def __init__(self, config: LasAtConfig, context: PolicyContext) -> None:
        super().__init__(config, context)
        config = self.config  # resolved: its presets filled
        assert (config.interval is not None and config.reward_weights is not None
                and config.r1_clamp is not None and config.lr is not None
                and config.lr_milestones is not None and config.momentum is not None
                and config.weight_decay is not None)  # filled by LasAtConfig.resolve
        self.variant = Variant(config.variant)
        self.reward_mode = RewardMode(config.reward_mode)
        self.baseline = Baseline(config.baseline)
        self.reward_form = parse_option(RewardForm, config.reward_form, "policy.reward_form")
        reward_attack = parse_option(RewardAttack, config.reward_attack, "policy.reward_attack")
        self.space = make_strategy_space(
            context.geometry, context.data, self.variant, context.eps,
            eps_grid=config.eps_grid, alpha_grid=config.alpha_grid,
            steps_grid=config.steps_grid, beta_grid=config.beta_grid)
        self.interval = int(config.interval)
        weights = tuple(config.reward_weights)
        if len(weights) != 2:
            raise ValueError(f"policy.reward_weights must be [a, b], got {list(weights)}")
        self.weights = (float(weights[0]), float(weights[1]))
        self.r1_clamp = float(config.r1_clamp)
        self.lr = float(config.lr)
        self.lr_milestones = tuple(config.lr_milestones)
        self.final_clip = bool(config.final_clip)
        self.r1_at = parse_option(R1At, config.r1_at or R1At.step, "policy.r1_at")
        self.net = StrategyNet(context.image_shape, self.space.nvec, config.trunk)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=self.lr,
                                         momentum=float(config.momentum),
                                         weight_decay=float(config.weight_decay))
        self.register_buffer("baseline_value", torch.zeros(()))
        self.register_buffer("baseline_ready", torch.zeros((), dtype=torch.bool))
        self.lookahead = LookaheadConfig(config.reward_pgd_steps, config.reward_pgd_restarts,
                                         attack=reward_attack)
        self.batches = 0  # batches seen (update() calls); learning batches: batches % k == 0
        self._log_prob: torch.Tensor | None = None  # (N,) with graph, on learning batches
        self._beta: torch.Tensor | None = None
        self._chosen_eps: torch.Tensor | None = None  # (N,) the ε the network picked
        self._clip: tuple[torch.Tensor, torch.Tensor, set[int]] | None = None
        self._entropy = torch.zeros(len(self.space.nvec))
        self._entropy_batches = 0

    # -- acting ----------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        super().begin_epoch(epoch)
        self._entropy = torch.zeros(len(self.space.nvec), device=self.baseline_value.device)
        self._entropy_batches = 0

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        """t = 0: sample (ε, α, K[, β]) per sample and a start point; later steps: no change
        (with ``final_clip``: each sample's last step projects onto min(ε_i, nominal ε))."""
        if t:
            return self._clip_last_step(t)
        x = obs["x"]
        learn = self.batches % self.interval == 0
        self.net.train(learn)
        with torch.set_grad_enabled(learn):
            logits = self.net(x)
            index = torch.stack([sample_categorical(z, generator) for z in logits], 1)
            log_prob = sum(categorical_log_prob(z, index[:, h]) for h, z in enumerate(logits))
            assert isinstance(log_prob, torch.Tensor)  # a sum over >= 1 heads
        with torch.no_grad():
            entropy = torch.stack([categorical_entropy(z).mean() for z in logits])
            self._entropy = self._entropy.to(entropy.device) + entropy
            self._entropy_batches += 1
        self._log_prob = log_prob if learn else None
        choice = self.space.decode(index)
        self._beta = choice.get("beta")
        self._chosen_eps = choice["eps"]
        if self.final_clip:
            last = set(torch.unique(choice["steps"]).tolist())  # host sync, once per episode
            self._clip = (choice["eps"].clone(), choice["steps"], last)
        # the KL attack (TRADES) starts at x + 0.001·N(0, 1): the env draws it (start_noise)
        init = (None if self.context.attack_loss is AttackLoss.KL
                else self.context.geometry.random_delta(x, choice["eps"], generator))
        return AttackAction(eps=choice["eps"], alpha=choice["alpha"], budget=choice["steps"],
                            init=init)

    def _clip_last_step(self, t: int) -> AttackAction | None:
        """Before step t: samples whose budget ends with this step project onto the nominal ε."""
        if self._clip is None or t + 1 not in self._clip[2]:
            return None
        eps, steps, _ = self._clip
        ending = steps == t + 1
        eps.copy_(torch.where(ending, eps.clamp(max=self.context.eps), eps))
        return AttackAction(eps=eps.clone())

    def target_inputs(self, result: AttackResult) -> TargetInputs:
        """β per sample for LAS-TRADES; on learning batches the target's look-ahead ŵ (its
        step smoothed with ``lookahead_true_class_prob``, else the AT loss's smoothing, which
        is this policy's) and, with ``r1_at=w``, the examples' eval-mode logits at w."""
        learn = self._log_prob is not None
        return TargetInputs(beta=self._beta, lookahead=learn,
                            lookahead_true_class_prob=self.config.lookahead_true_class_prob,
                            logits_before=learn and self.r1_at is R1At.w)

    # -- learning --------------------------------------------------------------------
    def reward_parts(self, terms: RewardTerms) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clamp(R1, 0, c), R2, R3): scalars (batch) or (N,) (per_sample); R2/R3 are ŵ's
        accuracies or −CE (``reward_form``)."""
        r1, r2, r3 = terms.r1, terms.r2, terms.r3
        if self.reward_form is RewardForm.ce:
            r2, r3 = -terms.ce_robust, -terms.ce_clean
        if self.reward_mode is RewardMode.batch:  # a torchrun job: the global batch's means
            r1, r2, r3 = all_reduce_mean(torch.stack([r1.mean(), r2.mean(), r3.mean()])).unbind()
        return r1.clamp(0, self.r1_clamp), r2, r3

    def reward(self, terms: RewardTerms) -> torch.Tensor:
        """reward = clamp(R1, 0, c) + clamp(a·R2, −c, c) + clamp(b·R3, −c, c), c the R1 clamp
        (the reference's clamps): a scalar (batch) or (N,) (per_sample)."""
        (a, b), c = self.weights, self.r1_clamp
        r1, r2, r3 = self.reward_parts(terms)
        return r1 + (a * r2).clamp(-c, c) + (b * r3).clamp(-c, c)

    def reinforce(self, log_prob: torch.Tensor, reward: torch.Tensor) -> dict[str, torch.Tensor]:
        """One REINFORCE step: loss = −mean_i(log π(a_i | x_i) · (reward − baseline)).

        Shape:
            log_prob: (N,) with graph into the strategy network; reward: () or (N,).

        In a torchrun job (each rank holds its slice of the global batch) the gradients are
        averaged over the ranks right after ``backward`` (before clipping) and the baseline
        uses the global mean reward, so the step is the global batch's and every rank keeps
        the same network (an all-reduce of the gradients, cheaper than gathering the images
        and log-probabilities of the global batch: README, "Several processes").
        """
        reward = reward.detach()
        advantage = reward
        if self.baseline is Baseline.moving_average:
            mean = all_reduce_mean(reward.mean())
            base = torch.where(self.baseline_ready, self.baseline_value, mean)
            advantage = reward - base
            m = self.config.baseline_momentum
            self.baseline_value.copy_(m * base + (1 - m) * mean)
            self.baseline_ready.fill_(True)
        loss = -(log_prob * advantage).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.net.parameters())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return {"policy/loss": loss.detach(), "policy/grad_norm": grad_norm.detach()}

    def _set_lr(self, batch_idx: int) -> None:
        total = max(self.context.epochs * self.context.batches_per_epoch, 1)
        passed = sum(batch_idx >= m * total for m in self.lr_milestones)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * 0.1 ** passed

    def update(self, result: AttackResult, view: TargetView, out: ATLossOutput,
               info: StepInfo) -> dict[str, torch.Tensor]:
        """On learning batches: look-ahead reward, then one REINFORCE step; else nothing."""
        self.batches += 1
        log_prob, self._log_prob = self._log_prob, None
        if log_prob is None:
            return {}
        terms = lookahead_terms(result, out, self.context.geometry, self.context.eps,
                                self.lookahead, info.generator)
        if self.variant is not Variant.trades:  # R1 = plain CE of f_w on the examples
            logits = out.logits_before if self.r1_at is R1At.w else out.logits_adv
            assert logits is not None  # asked for in target_inputs
            r1 = F.cross_entropy(logits.float(), result.y, reduction="none")
            terms = replace(terms, r1=r1)
        reward = self.reward(terms)
        self._set_lr(info.step)
        metrics = self.reinforce(log_prob, reward)
        r1, r2, r3 = (v.mean() for v in self.reward_parts(terms))
        metrics.update({"policy/reward": reward.mean(), "policy/reward_r1": r1,
                        "policy/reward_r2": r2, "policy/reward_r3": r3})
        return metrics

    # -- tracking --------------------------------------------------------------------
    def describe(self, result: AttackResult) -> dict[str, torch.Tensor]:
        """Per-sample chosen ε, α, K (and β): categorical over the grids (see :meth:`grids`)."""
        n = result.eps.shape[0]
        eps = result.eps if self._chosen_eps is None else self._chosen_eps[:n]
        out = {"eps": eps, "alpha": result.alpha, "steps": result.budget.to(result.eps.dtype)}
        if self._beta is not None:
            out["beta"] = self._beta
        return out

    def grids(self) -> dict[str, list[float]]:
        """Every head's grid (the tracked distributions have one entry per grid value)."""
        return {head: list(grid) for head, grid in self.space.heads.items()}

    def epoch_metrics(self) -> dict[str, float | torch.Tensor]:
        """Mean entropy of the sampling distribution this epoch: total and per head (nats)."""
        n = max(self._entropy_batches, 1)
        per_head = self._entropy / n
        out: dict[str, float | torch.Tensor] = {"policy/entropy": per_head.sum()}
        for h, head in enumerate(self.space.heads):
            out[f"policy/entropy_{head}"] = per_head[h]
        return out

    def extra_state(self) -> dict[str, Any]:
        """Policy optimiser state, the batch counter (which batches learn) and this epoch's
        entropy sums (a checkpoint may fall in the middle of an epoch)."""
        return {"optimizer": self.optimizer.state_dict(), "batches": self.batches,
                "entropy": self._entropy.clone(), "entropy_batches": self._entropy_batches}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.batches = int(state.get("batches", 0))
        if "entropy" in state:
            self._entropy = state["entropy"].to(self.baseline_value.device)
            self._entropy_batches = int(state["entropy_batches"])
