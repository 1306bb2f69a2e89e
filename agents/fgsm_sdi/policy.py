"""FGSM-SDI (Jia et al., TIP 2022): a generator network chooses each sample's FGSM start.

Per batch: the env computes the sign of the target's input gradient at the clean point (the
``clean_grad_sign`` extra, requested only by this policy); the generator maps (x, sign g) to
η = ε·tanh(·) (an L∞ box of radius ε, which the env projects into the run's geometry); the env
takes one FGSM step of size α from x + η and projects. Every ``update_every`` batches the
generator takes one Adam step that *maximises* the target's (label-smoothed) loss on the final
example: it runs its own episode on the batch through the target's view
(:meth:`targets.target.TargetView.attack`, in the env's differentiable mode: gradient
directions detached, as in the reference: no second order) and back-propagates into itself.

Departures from the reference code (docs/references.md §2.3-2.4), each deliberate:
    * The generator step runs after the target's step on the same batch (the policy protocol's
      ``update``), not before it; it recomputes its own forward on that batch.
    * The target is in the env's BatchNorm mode (``bn_mode``, eval by default) during the
      attack and the generator step; the reference keeps it in train mode, which updates its
      running statistics with attack batches.
    * The adversarial input is projected onto the image box [0, 1] (the reference never clips).
    * Only the generator's parameters receive gradients (``autograd.grad``), so the target's
      ``.grad`` is never touched by the generator step.
    * The reference's generator LR scheduler never decays (§0.4); this one has none.

Option ``grad_input=previous`` (not in the paper; for speed): instead of the clean-point
gradient (one extra forward/backward of the target per batch, the main cost of FGSM-SDI over
FGSM-RS), the generator sees the sign of the gradient the env took at this sample's FGSM point
x + η in the previous epoch (the ``first_grad`` extra, free), stored per data-set index and
aligned with the augmentation like FGSM-PGI's priors; samples not seen yet get zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, ClassVar

import torch

from learned_at.agents.base import (Policy, PolicyConfig, PolicyContext, PresetContext,
                                   StepInfo, register_policy)
from learned_at.agents.fgsm_sdi.generator import InitGenerator
from learned_at.agents.fixed import uniform_action
from learned_at.agents.init_stats import describe_init
from learned_at.agents.prior_memory import PriorMemory
from learned_at.envs.attack_env import AttackAction, Obs
from learned_at.envs.options import setting, COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY, Limit, parse_option
from learned_at.envs.requirements import BnMode, EnvRequirements, Extra
from learned_at.envs.result import AttackResult
from learned_at.targets.distributed import average_buffers, average_gradients
from learned_at.targets.losses.base import ATLossOutput, soft_cross_entropy
from learned_at.targets.target import TargetView


class GradInput(str, Enum):
    """The gradient sign the generator sees."""

    clean = "clean"        # at the clean point, computed every batch (paper)
    previous = "previous"  # at the sample's FGSM point of the previous epoch, stored (free)


@dataclass(frozen=True)
class FgsmSdiConfig(PolicyConfig):
    """FGSM-SDI: learned per-sample initialisation."""

    limits: ClassVar[dict[str, Limit]] = {
        "alpha_ratio": NON_NEGATIVE, "update_every": COUNT, "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE, "width": COUNT, "true_class_prob": PROBABILITY}

    name: str = setting("fgsm_sdi", "registry id.")
    alpha_ratio: float = setting(1.0, "FGSM step α as a multiple of ε (reference: α = ε = 8/255).")
    update_every: int = setting(20, "generator update period k in batches (reference 20).")
    lr: float = setting(1e-3, "generator Adam learning rate (reference 1e-3).")
    weight_decay: float = setting(5e-4, "generator Adam L2 weight decay (reference 5e-4).")
    width: int = setting(64, "hidden channels of the generator (reference 64).")
    grad_input: GradInput = setting(GradInput.clean, "the gradient sign the generator sees: clean "
                                                     "(paper: at the clean point, computed every "
                                                     "batch) or previous (at the sample's FGSM "
                                                     "point of the previous epoch, stored per "
                                                     "sample; no extra target pass; see the "
                                                     "module doc).")
    true_class_prob: float | None = setting(None, "label smoothing of the generator's objective "
                                                  "*and* the target's AT loss (one setting with "
                                                  "at_loss.true_class_prob: set either); None = "
                                                  "the reference recipe's 0.5 (docs/references.md "
                                                  "§0.2); 1.0 turns smoothing off.")
    target_smoothing: ClassVar[bool] = True

    def resolve(self, preset: PresetContext) -> FgsmSdiConfig:
        """``true_class_prob``: the reference recipe's 0.5 when it is None."""
        return self if self.true_class_prob is not None else replace(self, true_class_prob=0.5)


@register_policy(FgsmSdiConfig)
class FgsmSdi(Policy):
    """Generator-initialised FGSM; the generator ascends the target's loss every k batches."""

    def __init__(self, config: FgsmSdiConfig, context: PolicyContext) -> None:
        super().__init__(config, context)
        config = self.config  # resolved: its presets filled
        self.grad_input = parse_option(GradInput, config.grad_input, "policy.grad_input")
        if self.grad_input is GradInput.previous:
            self.grad_memory = PriorMemory(context.num_train, context.image_shape,
                                           context.device, "bfloat16")  # signs are exact
        self.generator = InitGenerator(context.image_shape[0], config.width).to(context.device)
        self.generator.eval()
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)

    def requirements(self) -> EnvRequirements:
        """The clean-gradient sign at reset (paper) or the first gradient (``previous``)."""
        extra = Extra.clean_grad_sign if self.grad_input is GradInput.clean else Extra.first_grad
        return EnvRequirements(extras=frozenset({extra}))

    def _grad_sign(self, obs: Obs) -> torch.Tensor:
        if self.grad_input is GradInput.previous:
            return self.grad_memory.read(obs["index"], obs.get("offsets"), obs.get("flipped"))
        if "clean_grad_sign" not in obs:
            raise ValueError("fgsm_sdi needs the env extra 'clean_grad_sign': build the env with "
                             "the policy's requirements()")
        return obs["clean_grad_sign"]

    def _action(self, obs: Obs) -> AttackAction:
        eps = self.context.eps
        eta = self.generator(obs["x"], self._grad_sign(obs), eps)
        alpha = self.context.geometry.step_size(eps, self.config.alpha_ratio)
        return uniform_action(obs, eps, alpha, 1, eta)

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        if t:
            return None
        with torch.no_grad():  # the training attack needs no graph; update() builds its own
            return self._action(obs)

    def update(self, result: AttackResult, view: TargetView, out: ATLossOutput,
               info: StepInfo) -> dict[str, torch.Tensor]:
        """Every k-th batch: one Adam step maximising LS-CE(f(x + δ_final), y) over G."""
        if self.grad_input is GradInput.previous:
            assert result.first_grad is not None
            self.grad_memory.write(result.index, result.first_grad.sign(), result.offsets,
                                   result.flipped)
        if info.step % self.config.update_every:
            return {}
        params = list(self.generator.parameters())
        self.generator.train()
        try:
            with torch.enable_grad():
                episode = view.attack(_GraphActor(self), result,
                                      replace(self.requirements(), differentiable=True))
                logits = view.forward(episode.x_adv,  # graph back to the generator
                                      train_bn=view.attack_bn_mode is BnMode.train)
                loss = soft_cross_entropy(logits, result.y, self.config.true_class_prob).mean()
                grads = torch.autograd.grad(-loss, params)  # ascent: minimise −loss
        finally:
            self.generator.eval()
        for p, g in zip(params, grads):
            p.grad = g
        average_gradients(params)  # torchrun: the global batch's step, equal on every rank
        average_buffers(self.generator)  # and its BatchNorm statistics
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"policy/generator_loss": loss.detach()}

    def describe(self, result: AttackResult) -> dict[str, torch.Tensor]:
        return describe_init(result, self.context.geometry)

    def extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state:
            self.optimizer.load_state_dict(state["optimizer"])


class _GraphActor:
    """The generator's action *with* its graph (for the generator's own episode)."""

    def __init__(self, policy: FgsmSdi) -> None:
        self.policy = policy

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        return None if t else self.policy._action(obs)
