"""The defended model and how it learns: model, optimiser, schedule and AT loss behind one seam.

:class:`Target` owns the model (later its DDP wrapper), its optimiser and per-batch
learning-rate scheduler, and the AT loss. The runner calls :meth:`Target.step` once per batch
with the episode's record and the policy's typed inputs; policies get a read-only
:meth:`Target.view` and the one-step look-ahead ŵ (:meth:`Target.lookahead`), the single
implementation behind LAS-AT's and PPO's rewards. Nothing else changes the target's weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from learned_at.envs.attack_env import AttackEnv, target_mode
from learned_at.envs.episode import Actor, run_episode
from learned_at.envs.requirements import BnMode, EnvRequirements
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import ATLoss, ATLossOutput
from learned_at.targets.shadow import Shadow

#: builds an attack env on the target's model for the given requirements.
EnvFactory = Callable[[EnvRequirements], AttackEnv]


class Target:
    """The target network and its training step.

    Args:
        model: maps (N, C, H, W) in [0, 1] to logits (N, K).
        optimizer: over ``model``'s parameters.
        scheduler: stepped once per training batch (after the optimiser step).
        loss: the AT loss.
        make_env: builds attack envs on ``model`` (for :meth:`TargetView.attack`); None when
            no policy needs an episode of its own.
        bn_mode: BatchNorm mode of the target during attacks (the env's).
        train_module: what the training step runs, sharing ``model``'s parameters — its
            DistributedDataParallel wrapper in a data-parallel run (gradients averaged over
            ranks in ``backward``); ``model`` itself when None. Attacks, look-ahead and
            checkpoints always use the bare ``model``.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, loss: ATLoss,
                 make_env: EnvFactory | None = None, bn_mode: BnMode = BnMode.eval,
                 train_module: nn.Module | None = None) -> None:
        self.model, self.optimizer, self.scheduler, self.loss = model, optimizer, scheduler, loss
        self.train_module = model if train_module is None else train_module
        self.make_env = make_env
        self.bn_mode = BnMode(bn_mode)
        self._shadow = Shadow()
        self._envs: dict[EnvRequirements, AttackEnv] = {}

    # -- the step ------------------------------------------------------------------------
    def step(self, result: AttackResult, inputs: TargetInputs = TargetInputs()) -> ATLossOutput:
        """One AT step on the episode's examples (detached), then one scheduler step.

        With ``inputs.lookahead`` the look-ahead ŵ is taken first, from the weights before this
        step, and returned as ``out.lookahead``; with ``inputs.logits_before`` the eval-mode
        logits of the examples at those weights are returned as ``out.logits_before``.
        """
        result = result.detached()
        before = self.eval_logits(result.x_adv) if inputs.logits_before else None
        ahead = self.lookahead(result, inputs) if inputs.lookahead else None
        out = self.loss.train_step(self.train_module, self.optimizer, result, inputs)
        self.loss.end_step()  # per-sample memories of the loss move only on the target's step
        self.scheduler.step()
        return replace(out, lookahead=ahead, logits_before=before)

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) logits of (N, C, H, W) ``x`` in eval mode without autograd (mode restored)."""
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            logits = self.model(x)
        self.model.train(was_training)
        return logits

    def lookahead(self, result: AttackResult, inputs: TargetInputs = TargetInputs()
                  ) -> nn.Module:
        """ŵ: a copy of the current weights after one plain SGD step of the AT loss.

        The step uses the target optimiser's current learning rate and weight decay without
        momentum (LAS-AT's freshly built optimiser, docs/references.md §1.5), the run's AT loss
        (so an AWP run looks ahead with the AWP-perturbed step) and the policy's inputs, its
        CE terms smoothed with ``inputs.lookahead_true_class_prob`` where that is set. The
        copy lives in one persistent shadow buffer, refreshed in place: the returned module is
        overwritten by the next call, and the target's own weights, buffers and optimiser
        state are never written. The shadow is left in eval mode.
        """
        shadow = self._shadow.load(self.model)
        optimizer = self._shadow.sgd(self.lr, self.weight_decay)
        with self.loss.smoothing(inputs.lookahead_true_class_prob):
            self.loss.train_step(shadow, optimizer, result.detached(), inputs)
        shadow.eval()
        return shadow

    # -- read access ---------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The optimiser's current learning rate (first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def weight_decay(self) -> float:
        """The optimiser's weight decay (first parameter group)."""
        return float(self.optimizer.param_groups[0].get("weight_decay", 0.0))

    def view(self) -> TargetView:
        """A read-only handle for policies."""
        return TargetView(self)

    def env_for(self, requirements: EnvRequirements) -> AttackEnv:
        """An attack env on the model for ``requirements`` (built once per requirements)."""
        if self.make_env is None:
            raise RuntimeError("this Target was built without make_env: it cannot run "
                               "episodes for policies")
        if requirements not in self._envs:
            self._envs[requirements] = self.make_env(requirements)
        return self._envs[requirements]

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser, scheduler and the loss's own state (weights_only-loadable)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "at_loss": self.loss.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss.load_state_dict(state["at_loss"])


class TargetView:
    """What a policy may do with the target: forward passes and attack episodes, no updates.

    Gradients taken through :meth:`forward` must be taken w.r.t. the policy's own tensors
    (``torch.autograd.grad``), so the target's ``.grad`` is never touched.
    """

    def __init__(self, target: Target) -> None:
        self._target = target

    @property
    def lr(self) -> float:
        """The target's current learning rate."""
        return self._target.lr

    @property
    def training_loss(self) -> ATLoss:
        """The target's AT loss (read its class attributes, e.g. the attack objective)."""
        return self._target.loss

    def forward(self, x: torch.Tensor, train_bn: bool = False) -> torch.Tensor:
        """Logits (N, K) of the target on x (N, C, H, W), with autograd as the caller's context;
        BatchNorm in eval mode unless ``train_bn`` (the mode is restored)."""
        model = self._target.model
        with target_mode(model, train_bn):
            return model(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits (N, K) without a graph."""
        return self.forward(x)

    def attack(self, actor: Actor, result: AttackResult, requirements: EnvRequirements,
               generator: torch.Generator | None = None) -> AttackResult:
        """Run an episode of ``actor`` on the batch of ``result`` (same samples and
        augmentation) in an env of the target built for ``requirements`` (e.g. FGSM-SDI's
        generator step needs the differentiable mode)."""
        env = self._target.env_for(requirements)
        return run_episode(env, actor, result.x, result.y, result.index,
                           offsets=result.offsets, flipped=result.flipped, generator=generator)

    @property
    def attack_bn_mode(self) -> BnMode:
        """The BatchNorm mode the run attacks in (forward passes of attack objectives)."""
        return self._target.bn_mode
