"""The batched attack environment: one gymnasium ``VectorEnv`` whose sub-environments are samples.

Sub-environment ``i`` is sample ``i`` of the current batch. An *episode* is the attack on one
batch: ``reset`` loads a clean batch (δ = 0), each ``step`` applies the policy's per-sample
choices and takes one projected gradient step for every sample that is still active, and the
episode ends for a sample when it has used its iteration budget or was stopped.

Per-sample parameters (all tensors on the target's device, shape (N,)):
    ``eps`` budget, ``alpha`` step size, ``budget`` number of gradient steps, ``stop`` flag,
    plus the initial perturbation ``init`` (N, C, H, W), honoured on the first step.

Active-set compaction: only active samples enter the forward/backward pass (``index_select``
/ index write), so a batch whose samples stop early costs less. The result equals the masked
full-batch computation (tested) whenever the target's forward is per-sample (BatchNorm in eval
mode, the default). The one host sync per step is the ``nonzero`` that sizes the active set.

Semantics worth knowing:
    * ``obs["loss"]``, ``obs["correct"]`` and ``obs["fosc"]`` describe the most recently
      *evaluated* iterate: by default, the point at which the last gradient was taken (the
      iterate before the last update). With ``observe_after_step=True`` the env evaluates the
      new iterate right after each update (for policies that decide on it, e.g. FOSC stopping);
      that gradient is reused by the next step, so the extra pass is only paid by samples that
      then stop.
    * The reward of a step is the per-sample attack loss in ``obs["loss"]`` (0 for samples that
      did not move); learned policies compute their own rewards (see agents/).
    * Autoreset is ``DISABLED``: the runner resets the env with the next batch.
    * Values are torch tensors, not numpy elements of the spaces; wrap with
      ``gymnasium.wrappers.vector.ArrayConversion`` for numpy tooling.

Differentiable mode keeps the autograd graph from ``init`` (e.g. a generator's output) to the
final example: the gradient *directions* are detached (no second order), the update and the
projection are not, so ``loss(f(x + δ_final))`` can be back-propagated into the generator.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import nn

from envs.attack_loss import AttackLoss, attack_loss
from envs.threat import Norm, ThreatModel

Obs = dict[str, torch.Tensor]


@dataclass
class AttackAction:
    """Per-sample choices for one env step; ``None`` fields keep the current setting.

    Shape:
        eps, alpha: (N,) float; budget: (N,) int64 (total gradient steps);
        init: (N, C, H, W) initial δ, only used on the first step; stop: (N,) bool.
    """

    eps: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    budget: torch.Tensor | None = None
    init: torch.Tensor | None = None
    stop: torch.Tensor | None = None


@dataclass(frozen=True)
class EnvConfig:
    """Static settings of the attack env.

    Attributes:
        norm: threat geometry.
        loss: attack objective.
        bn_mode: ``"eval"`` (default; attack steps do not touch BatchNorm statistics) or
            ``"train"`` (attack through batch statistics; updates running stats every step).
        observe_after_step: evaluate each new iterate right after its update (see module doc).
        differentiable: keep the graph from ``init`` to the final δ.
        extras: costly observation extras, e.g. ``{"clean_grad_sign"}`` (computed at reset) or
            ``{"first_grad"}`` (the attack-loss gradient at the initial point x + δ₀, kept
            from the first step, (N, C, H, W), zeros for samples with budget 0; FGSM-PGI's
            momentum prior needs it).
        fosc_reference: x⁰ of the FOSC value: ``"natural"`` (the clean input, as in the Dynamic
            AT paper) or ``"start"`` (the initial point x + δ₀, as in its reference code).
        observe_final: with ``observe_after_step``, also evaluate the new iterate of samples
            that have just used up their budget, so ``obs["fosc"]``/``loss``/``correct``
            describe every sample's *final* example (one extra pass per such sample).
    """

    norm: Norm = Norm.LINF
    loss: AttackLoss = AttackLoss.CE
    bn_mode: str = "eval"
    observe_after_step: bool = False
    differentiable: bool = False
    extras: frozenset[str] = frozenset()
    fosc_reference: str = "natural"
    observe_final: bool = False

    def __post_init__(self) -> None:
        if self.fosc_reference not in ("natural", "start"):
            raise ValueError("fosc_reference must be 'natural' or 'start', "
                             f"got {self.fosc_reference!r}")
        if self.bn_mode not in ("eval", "train"):
            raise ValueError(f"bn_mode must be 'eval' or 'train', got {self.bn_mode!r}")
        unknown = set(self.extras) - {"clean_grad_sign", "clean_logits", "first_grad"}
        if unknown:
            raise ValueError(f"unknown observation extras {sorted(unknown)}; "
                             "valid: clean_grad_sign, clean_logits, first_grad")


@contextmanager
def target_mode(model: nn.Module, train: bool) -> Iterator[None]:
    """Temporarily put ``model`` in train/eval mode, restoring the previous mode."""
    was = model.training
    model.train(train)
    try:
        yield
    finally:
        model.train(was)


class AttackEnv(VectorEnv):
    """Batched, torch-native attack environment on the target's device.

    Args:
        model: the target; maps (N, C, H, W) images in [0, 1] to logits (N, K). Never updated.
        config: static settings (:class:`EnvConfig`).
        image_shape: (C, H, W) of one sample.
        max_budget: upper bound of per-sample iteration budgets (for the action space).
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, model: nn.Module, config: EnvConfig, image_shape: tuple[int, int, int],
                 max_budget: int = 100) -> None:
        self.model = model
        self.config = config
        self.threat = ThreatModel(config.norm)
        self.image_shape = tuple(image_shape)
        self.max_budget = max_budget
        self.single_observation_space = spaces.Dict({
            "x": spaces.Box(0.0, 1.0, self.image_shape, np.float32),
            "x_adv": spaces.Box(0.0, 1.0, self.image_shape, np.float32),
            "index": spaces.Box(0, np.iinfo(np.int64).max, (), np.int64),
            "step": spaces.Box(0, max_budget, (), np.int64),
            "loss": spaces.Box(-np.inf, np.inf, (), np.float32),
            "correct": spaces.Box(0, 1, (), np.bool_),
            "fosc": spaces.Box(-np.inf, np.inf, (), np.float32),
            "active": spaces.Box(0, 1, (), np.bool_),
        })
        self.single_action_space = spaces.Dict({
            "eps": spaces.Box(0.0, np.inf, (), np.float32),
            "alpha": spaces.Box(0.0, np.inf, (), np.float32),
            "budget": spaces.Box(0, max_budget, (), np.int64),
            "init": spaces.Box(-1.0, 1.0, self.image_shape, np.float32),
            "stop": spaces.Box(0, 1, (), np.bool_),
        })
        self.num_envs = 0
        self._spaces_for = -1
        self.samples_evaluated = 0  # host counter: forward+backward sample passes (cost)

    # -- gymnasium plumbing -------------------------------------------------------------
    @property
    def observation_space(self) -> spaces.Space:  # type: ignore[override]
        """Batched observation space for the current ``num_envs``."""
        return batch_space(self.single_observation_space, max(self.num_envs, 1))

    @property
    def action_space(self) -> spaces.Space:  # type: ignore[override]
        """Batched action space for the current ``num_envs``."""
        return batch_space(self.single_action_space, max(self.num_envs, 1))

    @property
    def device(self) -> torch.device:
        """Device of the target's parameters (where every env tensor lives)."""
        return next(self.model.parameters()).device

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Obs, dict[str, Any]]:
        """Load a clean batch. ``options`` = {"x": (N,C,H,W), "y": (N,), "index": (N,) optional}.

        Optional ``"offsets"`` (N, 2) and ``"flipped"`` (N,) describe the loader's augmentation
        of ``x`` (targets/loader.py); when given they appear in the observation, so policies
        with per-sample memory can align stored tensors with the augmented images.

        Returns:
            obs, info. ``seed`` is accepted for API compatibility; the env itself draws no
            random numbers (random starts are the policy's choice).
        """
        if not options or "x" not in options or "y" not in options:
            raise ValueError("AttackEnv.reset needs options={'x': images, 'y': labels[, 'index']}")
        x, y = options["x"], options["y"]
        n = x.shape[0]
        dev = x.device
        self.num_envs = n
        self.x, self.y = x, y
        self.index = options.get("index")
        self.augmentation = {k: options[k] for k in ("offsets", "flipped")
                             if options.get(k) is not None}
        if self.index is None:
            self.index = torch.arange(n, device=dev)
        zeros = torch.zeros(n, device=dev)
        self.delta = torch.zeros_like(x)
        self.delta0 = self.delta
        self.eps, self.alpha = zeros.clone(), zeros.clone()
        self.budget = torch.zeros(n, dtype=torch.long, device=dev)
        self.steps = torch.zeros(n, dtype=torch.long, device=dev)
        self.grad_evals = torch.zeros(n, dtype=torch.long, device=dev)
        self.stopped = torch.zeros(n, dtype=torch.bool, device=dev)
        self.loss, self.fosc = zeros.clone(), zeros.clone()
        self.correct = torch.zeros(n, dtype=torch.bool, device=dev)
        self._grad: torch.Tensor | None = None  # cached gradient at the current iterate
        self._configured = False
        self.extras: dict[str, torch.Tensor] = {}
        need_clean = self.config.loss is AttackLoss.KL or "clean_logits" in self.config.extras
        if need_clean or "clean_grad_sign" in self.config.extras:
            self._compute_clean_extras(need_clean)
        return self._obs(), {}

    def _compute_clean_extras(self, need_logits: bool) -> None:
        """Clean logits (for KL) and/or sign of ∇ₓ CE at the clean point (FGSM-SDI's input)."""
        with target_mode(self.model, self.config.bn_mode == "train"):
            if "clean_grad_sign" in self.config.extras:
                x = self.x.detach().requires_grad_(True)
                logits = self.model(x)
                ce = attack_loss(AttackLoss.CE, logits, self.y)
                (g,) = torch.autograd.grad(ce.sum(), x)
                self.extras["clean_grad_sign"] = g.sign()
                self.extras["clean_logits"] = logits.detach()
                self.samples_evaluated += self.num_envs
            elif need_logits:
                with torch.no_grad():
                    self.extras["clean_logits"] = self.model(self.x)

    def _obs(self) -> Obs:
        obs = {
            "x": self.x, "x_adv": self.x_adv, "index": self.index, "step": self.steps,
            "loss": self.loss, "correct": self.correct, "fosc": self.fosc,
            "active": self.active_mask(), "y": self.y,
        }
        obs.update(self.augmentation)
        obs.update(self.extras)
        return obs

    # -- state ---------------------------------------------------------------------------
    @property
    def x_adv(self) -> torch.Tensor:
        """Current adversarial batch x + δ, (N, C, H, W)."""
        return self.x + self.delta

    def active_mask(self) -> torch.Tensor:
        """Samples that will move at the next step: not stopped and budget left. (N,) bool."""
        return ~self.stopped & (self.steps < self.budget)

    def adversarial_batch(self) -> torch.Tensor:
        """The final adversarial examples, detached unless in differentiable mode. (N,C,H,W)."""
        x_adv = self.x_adv
        return x_adv if self.config.differentiable else x_adv.detach()

    def _configure(self, action: AttackAction) -> None:
        n, dev = self.num_envs, self.x.device
        for name in ("eps", "alpha", "budget"):
            value = getattr(action, name)
            if value is None and not self._configured:
                raise ValueError(f"the first action of an episode must set '{name}' "
                                 "(per-sample tensor of shape (N,))")
            if value is not None:
                if value.shape != (n,):
                    raise ValueError(f"action.{name} must have shape ({n},), got "
                                     f"{tuple(value.shape)}")
                dtype = torch.long if name == "budget" else self.x.dtype
                setattr(self, name, value.to(device=dev, dtype=dtype))
                self._grad = None
        if not self._configured:
            if action.init is not None:
                self.delta = self.threat.project(action.init, self.x, self.eps)
                if not self.config.differentiable:
                    self.delta = self.delta.detach()
            self.delta0 = self.delta.detach()
            self._configured = True
        if action.stop is not None:
            self.stopped = self.stopped | action.stop.to(dev, torch.bool)

    # -- the hot path --------------------------------------------------------------------
    def _evaluate(self, idx: torch.Tensor | None, delta: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward/backward on the samples ``idx`` (None = all) at perturbation ``delta``.

        Returns:
            grad (M, C, H, W) of the summed per-sample loss w.r.t. δ, loss (M,), correct (M,).
        """
        x = self.x if idx is None else self.x.index_select(0, idx)
        y = self.y if idx is None else self.y.index_select(0, idx)
        clean = self.extras.get("clean_logits")
        if clean is not None and idx is not None:
            clean = clean.index_select(0, idx)
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad(), target_mode(self.model, self.config.bn_mode == "train"):
            logits = self.model(x + d)
            loss = attack_loss(self.config.loss, logits, y, clean)
            (grad,) = torch.autograd.grad(loss.sum(), d)
        self.samples_evaluated += d.shape[0]
        return grad, loss.detach(), logits.detach().argmax(1) == y

    def _write(self, name: str, idx: torch.Tensor | None, value: torch.Tensor) -> None:
        """Write rows ``idx`` of a state tensor (out of place in differentiable mode)."""
        if idx is None:
            setattr(self, name, value)
        elif name == "delta" and self.config.differentiable:
            self.delta = self.delta.index_copy(0, idx, value)
        else:
            getattr(self, name).index_copy_(0, idx, value)

    def step(self, actions: AttackAction) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor,
                                                   dict[str, Any]]:
        """Apply the per-sample choices, then one projected gradient step for active samples.

        Returns:
            obs, reward (N,), terminated (N,) bool, truncated (N,) bool (always False), info
            with ``loss`` (N,) and ``num_active`` (host int: samples that moved).
        """
        if not hasattr(self, "x"):
            raise RuntimeError("call reset(options={'x': ..., 'y': ...}) before step()")
        self._configure(actions if actions is not None else AttackAction())
        active = self.active_mask()
        idx_all = active.nonzero().squeeze(1)  # host sync: sizes the active set
        m = idx_all.numel()
        if m:
            idx = None if m == self.num_envs else idx_all
            delta = self.delta if idx is None else self.delta.index_select(0, idx)
            if self._grad is not None:
                grad = self._grad if idx is None else self._grad.index_select(0, idx)
            else:
                grad, loss, correct = self._evaluate(idx, delta)
                self._record(idx, delta, grad, loss, correct)
            if "first_grad" in self.config.extras and "first_grad" not in self.extras:
                self.extras["first_grad"] = (grad if idx is None else torch.zeros_like(
                    self.x).index_copy_(0, idx, grad))
            eps = self.eps if idx is None else self.eps.index_select(0, idx)
            alpha = self.alpha if idx is None else self.alpha.index_select(0, idx)
            x = self.x if idx is None else self.x.index_select(0, idx)
            new = self.threat.project(self.threat.step(delta, grad, alpha), x, eps)
            self._write("delta", idx, new)
            self.steps.index_add_(0, idx_all, torch.ones_like(idx_all))
            self._grad = None
            if self.config.observe_after_step:
                self._observe_new_iterate(idx_all if self.config.observe_final else None)
        terminated = ~self.active_mask()
        truncated = torch.zeros_like(terminated)
        reward = self.loss
        return self._obs(), reward, terminated, truncated, {"loss": self.loss, "num_active": m}

    def _record(self, idx: torch.Tensor | None, delta: torch.Tensor, grad: torch.Tensor,
                loss: torch.Tensor, correct: torch.Tensor) -> None:
        eps = self.eps if idx is None else self.eps.index_select(0, idx)
        offset = delta.detach()
        if self.config.fosc_reference == "start":
            offset = offset - (self.delta0 if idx is None else self.delta0.index_select(0, idx))
        fosc = self.threat.fosc(grad, offset, eps)
        for name, value in (("loss", loss), ("correct", correct), ("fosc", fosc)):
            self._write(name, idx, value)
        if idx is None:
            self.grad_evals += 1
        else:
            self.grad_evals.index_add_(0, idx, torch.ones_like(idx))

    def _observe_new_iterate(self, moved: torch.Tensor | None = None) -> None:
        """Evaluate the samples that can still move at their new iterate; cache the gradient.

        ``moved`` (M,) int64: evaluate these samples instead (``observe_final``: every sample
        that has just moved, including those that used up their budget).
        """
        idx_all = self.active_mask().nonzero().squeeze(1) if moved is None else moved  # host sync
        m = idx_all.numel()
        if not m:
            return
        idx = None if m == self.num_envs else idx_all
        delta = self.delta if idx is None else self.delta.index_select(0, idx)
        grad, loss, correct = self._evaluate(idx, delta)
        self._record(idx, delta, grad, loss, correct)
        if idx is None:
            self._grad = grad
        else:
            self._grad = torch.zeros_like(self.x).index_copy_(0, idx, grad)

    def close_extras(self, **kwargs: Any) -> None:
        """Drop references to the batch."""
        for name in ("x", "y", "delta", "_grad"):
            if hasattr(self, name):
                delattr(self, name)
