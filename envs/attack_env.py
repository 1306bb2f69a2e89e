"""The batched attack environment: one gymnasium ``VectorEnv`` whose sub-environments are samples.

Sub-environment ``i`` is sample ``i`` of the current batch; ``num_envs`` is fixed when the env
is built (the batch size). An *episode* is the attack on one batch: ``reset`` loads a clean
batch, each ``step`` applies the policy's per-sample choices and takes one projected ascent
step (in the threat geometry of :mod:`envs.geometry`) for every sample that is still active,
and the episode ends for a sample when it has used its iteration budget or was stopped. A
batch smaller than ``num_envs`` is padded: the padding slots are inactive from the start, cost
nothing and read as zeros. :meth:`AttackEnv.result` returns the frozen episode record
(:class:`envs.result.AttackResult`); :func:`envs.episode.run_episode` drives a whole episode.

Per-sample parameters (tensors on the target's device, shape (N,)): ``eps`` budget (in the
geometry's unit), ``alpha`` step size, ``budget`` number of gradient steps, ``stop`` flag, plus
the initial perturbation ``init`` (N, C, H, W), honoured on the first step (without one, δ₀ = 0,
or Gaussian noise when the requirements ask for ``start_noise``). The geometry keeps
its own per-sample attack state (δ for L∞/L2), which the env only selects and writes by row.

Actions: :class:`AttackAction` (the fast path) or a dict with a subset of the keys of
``action_space`` (numpy or torch values, e.g. ``env.action_space.sample()`` or what
``gymnasium.wrappers.vector.ArrayConversion`` passes); missing keys keep the current setting.
Observations carry exactly the keys of ``single_observation_space``: optional ones (the
augmentation, the :class:`~envs.requirements.Extra` s, FOSC where the geometry has it) are
declared only when the env is built to provide them.

Active-set compaction: only active samples enter the forward/backward pass (``index_select``
/ index write), so a batch whose samples stop early costs less. The result equals the masked
full-batch computation (tested) whenever the target's forward is per-sample (BatchNorm in eval
mode, the default). Host syncs: one per episode to read the budgets' range, then, only while
some sample may have stopped, the ``nonzero`` that sizes the active set.

Semantics worth knowing:
    * ``obs["loss"]``, ``obs["correct"]`` and ``obs["fosc"]`` describe the most recently
      *evaluated* iterate (see :class:`envs.requirements.EnvRequirements` for
      ``observe_after_step`` / ``observe_final``).
    * The reward of a step is the per-sample attack loss in ``obs["loss"]`` (for gymnasium
      tooling such as ``RecordEpisodeStatistics``); no built-in policy learns from it — the
      learned policies' rewards come from the target (agents/strategy/lookahead.py).
    * Autoreset is ``DISABLED``: the runner resets the env with the next batch; ``reset()``
      without options draws the next batch from the ``source`` the env was given.
    * Values are torch tensors, not numpy elements of the spaces; wrap with
      ``gymnasium.wrappers.vector.ArrayConversion`` for numpy tooling.

Differentiable mode keeps the autograd graph from ``init`` (e.g. a generator's output) to the
final example: the gradient *directions* are detached (no second order), the update and the
projection are not, so ``loss(f(x + δ_final))`` can be back-propagated into the generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import nn

from learned_at.envs.attack_loss import AttackLoss, attack_loss
from learned_at.envs.geometry.base import Geometry
from learned_at.envs.geometry.linf import Linf
from learned_at.envs.requirements import BnMode, EnvRequirements, Extra, FoscReference
from learned_at.envs.result import AttackResult

Obs = dict[str, torch.Tensor]
_INT_MAX = np.iinfo(np.int64).max


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


ACTION_KEYS = tuple(f.name for f in fields(AttackAction))


@dataclass(frozen=True)
class EnvConfig:
    """Static settings of the attack env.

    Attributes:
        geometry: the threat geometry (state, step, projection, FOSC).
        loss: attack objective.
        bn_mode: BatchNorm mode of the target during attack steps.
        requirements: what policies and AT losses need computed (extras, observation timing,
            differentiable mode, FOSC reference).
        augmented: batches come with the loader's augmentation (``offsets``/``flipped`` are
            then declared observations).
        num_classes: K; needed to declare the ``clean_logits`` observation.
    """

    geometry: Geometry = field(default_factory=Linf)
    loss: AttackLoss = AttackLoss.CE
    bn_mode: BnMode = BnMode.eval
    requirements: EnvRequirements = EnvRequirements()
    augmented: bool = False
    num_classes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bn_mode", BnMode(self.bn_mode))
        object.__setattr__(self, "loss", AttackLoss(self.loss))
        if Extra.clean_logits in self.extras and self.num_classes is None:  # loss=kl adds it
            raise ValueError("the clean_logits extra needs EnvConfig(num_classes=K)")

    @property
    def extras(self) -> frozenset[Extra]:
        """The extras to compute, including those the attack loss itself needs."""
        extras = self.requirements.extras
        if self.loss is AttackLoss.KL:
            extras = extras | {Extra.clean_logits}
        if Extra.clean_grad_sign in extras:
            extras = extras | {Extra.clean_logits}
        return extras


@contextmanager
def target_mode(model: nn.Module, train: bool) -> Iterator[None]:
    """Temporarily put ``model`` in train/eval mode, restoring the previous mode."""
    was = model.training
    model.train(train)
    try:
        yield
    finally:
        model.train(was)


def _image_box(low: float, high: float, shape: tuple[int, ...]) -> spaces.Box:
    return spaces.Box(low, high, shape, np.float32)


def _scalar(low: float, high: float, dtype: Any) -> spaces.Box:
    return spaces.Box(low, high, (), dtype)


class AttackEnv(VectorEnv):
    """Batched, torch-native attack environment on the target's device.

    Args:
        model: the target; maps (N, C, H, W) images in [0, 1] to logits (N, K). Never updated.
        config: static settings (:class:`EnvConfig`).
        image_shape: (C, H, W) of one sample.
        num_envs: sub-environments (the largest batch); fixed for the env's lifetime.
        max_budget: upper bound of per-sample iteration budgets (for the action space).
        source: where ``reset()`` without options draws batches: an iterable of batches with
            attributes ``x``, ``y`` and optionally ``index``, ``offsets``, ``flipped`` (e.g. a
            :class:`targets.loader.DeviceLoader`), re-iterated when exhausted.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, model: nn.Module, config: EnvConfig, image_shape: tuple[int, int, int],
                 num_envs: int, max_budget: int = 100,
                 source: Iterable[Any] | Callable[[], Any] | None = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.model = model
        self.config = config
        self.geometry = config.geometry
        self.requirements = config.requirements
        self.image_shape = tuple(image_shape)
        self.num_envs = int(num_envs)
        self.max_budget = max_budget
        self.source = source
        self._source_iter: Iterator[Any] | None = None
        self.samples_evaluated = 0  # host counter: forward+backward sample passes (cost)

    # -- gymnasium plumbing -------------------------------------------------------------
    @cached_property
    def single_observation_space(self) -> spaces.Dict:  # type: ignore[override]
        """One sample's observation; optional keys only when the env provides them."""
        img = self.image_shape
        obs: dict[str, spaces.Space] = {
            "x": _image_box(0.0, 1.0, img), "x_adv": _image_box(0.0, 1.0, img),
            "y": _scalar(0, _INT_MAX, np.int64), "index": _scalar(0, _INT_MAX, np.int64),
            "step": _scalar(0, _INT_MAX, np.int64),
            "loss": _scalar(-np.inf, np.inf, np.float32),
            "correct": _scalar(0, 1, np.bool_), "active": _scalar(0, 1, np.bool_),
        }
        if self.geometry.has_fosc:
            obs["fosc"] = _scalar(-np.inf, np.inf, np.float32)
        if self.config.augmented:
            obs["offsets"] = spaces.Box(0, _INT_MAX, (2,), np.int64)
            obs["flipped"] = _scalar(0, 1, np.bool_)
        extras = self.config.extras
        if Extra.clean_logits in extras:
            num_classes = self.config.num_classes
            assert num_classes is not None  # EnvConfig checks it when clean_logits is an extra
            obs["clean_logits"] = spaces.Box(-np.inf, np.inf, (num_classes,), np.float32)
        if Extra.clean_grad_sign in extras:
            obs["clean_grad_sign"] = _image_box(-1.0, 1.0, img)
        if Extra.first_grad in extras:
            obs["first_grad"] = _image_box(-np.inf, np.inf, img)
        return spaces.Dict(obs)

    @cached_property
    def single_action_space(self) -> spaces.Dict:  # type: ignore[override]
        """One sample's action (see :class:`AttackAction`)."""
        return spaces.Dict({
            "eps": _scalar(0.0, np.inf, np.float32), "alpha": _scalar(0.0, np.inf, np.float32),
            "budget": _scalar(0, self.max_budget, np.int64),
            "init": _image_box(-1.0, 1.0, self.image_shape),
            "stop": _scalar(0, 1, np.bool_),
        })

    @cached_property
    def observation_space(self) -> spaces.Space:  # type: ignore[override]
        """Batched observation space (``num_envs`` sub-environments)."""
        return batch_space(self.single_observation_space, self.num_envs)

    @cached_property
    def action_space(self) -> spaces.Space:  # type: ignore[override]
        """Batched action space (``num_envs`` sub-environments)."""
        return batch_space(self.single_action_space, self.num_envs)

    @property
    def device(self) -> torch.device:
        """Device of the target's parameters (where every env tensor lives)."""
        return next(self.model.parameters()).device

    # -- reset ---------------------------------------------------------------------------
    def _next_from_source(self) -> dict[str, Any]:
        if self.source is None:
            raise ValueError("AttackEnv.reset needs options={'x': images, 'y': labels[, 'index']}"
                             " or a data source: AttackEnv(..., source=<loader>)")
        if callable(self.source):
            b = self.source()
        else:
            if self._source_iter is None:
                self._source_iter = iter(self.source)
            try:
                b = next(self._source_iter)
            except StopIteration:
                self._source_iter = iter(self.source)
                b = next(self._source_iter)
        return {k: getattr(b, k, None) for k in ("x", "y", "index", "offsets", "flipped")}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Obs, dict[str, Any]]:
        """Load a clean batch.

        ``options`` = {"x": (n, C, H, W), "y": (n,), "index": (n,) optional, "offsets": (n, 2)
        and "flipped": (n,) (the loader's augmentation, required when the env is ``augmented``),
        "generator": the episode's ``torch.Generator`` for geometries whose steps draw random
        numbers}, with n ≤ num_envs. Without options (or without "x") the next batch comes from
        the env's ``source``.

        Returns:
            obs, info. ``seed`` is accepted for API compatibility; the env itself draws no
            random numbers (random starts are the policy's choice).
        """
        options = dict(options or {})
        if "x" not in options or "y" not in options:
            options.update(self._next_from_source())
        x, y = options["x"], options["y"]
        n = x.shape[0]
        if n > self.num_envs or n < 1:
            raise ValueError(f"a batch of {n} samples does not fit this env's num_envs="
                             f"{self.num_envs}")
        dev = x.device
        self.n = n
        self.x, self.y = x, y
        index = options.get("index")
        self.index: torch.Tensor = torch.arange(n, device=dev) if index is None else index
        self.offsets, self.flipped = options.get("offsets"), options.get("flipped")
        if self.config.augmented and (self.offsets is None or self.flipped is None):
            raise ValueError("this env is built for augmented batches: reset needs 'offsets' "
                             "and 'flipped' (targets.loader.Batch has them)")
        if not self.config.augmented:
            self.offsets = self.flipped = None
        self.generator = options.get("generator")
        zeros = torch.zeros(n, device=dev)
        self.state = self.geometry.start(x, zeros, None)
        self.delta0 = torch.zeros_like(x)
        self.eps, self.alpha = zeros.clone(), zeros.clone()
        self.budget = torch.zeros(n, dtype=torch.long, device=dev)
        self.steps = torch.zeros(n, dtype=torch.long, device=dev)
        self.passes = torch.zeros(n, dtype=torch.long, device=dev)
        self.stopped = torch.zeros(n, dtype=torch.bool, device=dev)
        self.loss, self.fosc = zeros.clone(), zeros.clone()
        self.correct = torch.zeros(n, dtype=torch.bool, device=dev)
        self._grad: torch.Tensor | None = None  # cached gradient at the current iterate
        self._configured = False
        self._may_stop = False  # some sample may have stopped early (host flag)
        self._uniform_until = 0  # steps during which every sample is known to be active
        self._steps_taken = 0
        self._budget_max = 0
        self._lockstep = True  # every sample has moved at every step so far (host flag)
        self.extras: dict[str, torch.Tensor] = {}
        extras = self.config.extras
        if Extra.first_grad in extras:  # zeros until the first step computes it
            self.extras[Extra.first_grad.value] = torch.zeros_like(x)
        self._first_grad_pending = Extra.first_grad in extras
        if Extra.clean_logits in extras or Extra.clean_grad_sign in extras:
            self._compute_clean_extras()
        if self.requirements.keep_best:
            self._start_best()
        return self._obs(), {}

    def _start_best(self) -> None:
        """keep_best: the clean point is the example to beat (δ = 0, its attack loss)."""
        clean = self.extras.get(Extra.clean_logits.value)
        with torch.no_grad(), target_mode(self.model, self.config.bn_mode is BnMode.train):
            logits = self.model(self.x) if clean is None else clean
            self.best_loss = attack_loss(self.config.loss, logits, self.y, clean)
        self.best_delta = torch.zeros_like(self.x)

    def _compute_clean_extras(self) -> None:
        """Clean logits (for KL, PPO's features) and/or sign of ∇ₓ CE at the clean point."""
        with target_mode(self.model, self.config.bn_mode is BnMode.train):
            if Extra.clean_grad_sign in self.config.extras:
                x = self.x.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = self.model(x)
                    ce = attack_loss(AttackLoss.CE, logits, self.y)
                    (g,) = torch.autograd.grad(ce.sum(), x)
                self.extras[Extra.clean_grad_sign.value] = g.sign()
                self.extras[Extra.clean_logits.value] = logits.detach()
                self.samples_evaluated += self.n
            else:
                with torch.no_grad():
                    self.extras[Extra.clean_logits.value] = self.model(self.x)

    def _pad(self, t: torch.Tensor) -> torch.Tensor:
        """(n, ...) -> (num_envs, ...) with zero rows for the padding slots."""
        if self.n == self.num_envs:
            return t
        pad = torch.zeros((self.num_envs - self.n, *t.shape[1:]), dtype=t.dtype, device=t.device)
        return torch.cat([t, pad])

    def _obs(self) -> Obs:
        obs = {"x": self.x, "x_adv": self.x_adv, "y": self.y, "index": self.index,
               "step": self.steps, "loss": self.loss, "correct": self.correct,
               "active": self.active_mask()}
        if self.geometry.has_fosc:
            obs["fosc"] = self.fosc
        if self.config.augmented:
            obs["offsets"], obs["flipped"] = self.offsets, self.flipped
        obs.update(self.extras)
        if self.n < self.num_envs:
            obs = {k: self._pad(v) for k, v in obs.items()}
        return obs

    # -- state ---------------------------------------------------------------------------
    @property
    def delta(self) -> torch.Tensor:
        """Current perturbation (n, C, H, W) (with graph in differentiable mode)."""
        return self.geometry.perturbation(self.state)

    @property
    def x_adv(self) -> torch.Tensor:
        """Current adversarial batch x + δ, (n, C, H, W)."""
        return self.x + self.delta

    def active_mask(self) -> torch.Tensor:
        """Samples that will move at the next step: not stopped and budget left. (n,) bool."""
        return ~self.stopped & (self.steps < self.budget)

    def adversarial_batch(self) -> torch.Tensor:
        """The final adversarial examples, detached unless in differentiable mode. (n,C,H,W)."""
        x_adv = self.x_adv
        return x_adv if self.requirements.differentiable else x_adv.detach()

    def result(self) -> AttackResult:
        """The frozen record of the episode so far (normally called once it has ended).

        With ``keep_best`` a sample its final iterate does not fool gets its best iterate
        (:class:`~envs.requirements.EnvRequirements`) as ``delta``/``x_adv`` and that
        iterate's loss; ``state`` stays the geometry's final state."""
        ex = self.extras
        delta = self.delta if self.requirements.differentiable else self.delta.detach()
        loss = self.loss
        if self.requirements.keep_best:
            keep = self.correct.view(-1, *[1] * (delta.dim() - 1))
            delta = torch.where(keep, self.best_delta, delta)
            loss = torch.where(self.correct, self.best_loss, loss)
        return AttackResult(
            x=self.x, y=self.y, index=self.index, x_adv=self.x + delta, delta=delta,
            delta0=self.delta0, eps=self.eps, alpha=self.alpha, budget=self.budget,
            steps=self.steps, passes=self.passes, loss=loss, correct=self.correct,
            fosc=self.fosc if self.geometry.has_fosc else None, state=self.state,
            first_grad=ex.get(Extra.first_grad.value),
            clean_logits=ex.get(Extra.clean_logits.value),
            clean_grad_sign=ex.get(Extra.clean_grad_sign.value),
            offsets=self.offsets, flipped=self.flipped, geometry=self.geometry)

    def _as_action(self, actions: AttackAction | dict[str, Any] | None) -> AttackAction:
        """An :class:`AttackAction` of (n, ...) tensors from any accepted action form."""
        if actions is None:
            return AttackAction()
        if isinstance(actions, dict):
            unknown = set(actions) - set(ACTION_KEYS)
            if unknown:
                raise ValueError(f"unknown action keys {sorted(unknown)}; valid: "
                                 f"{', '.join(ACTION_KEYS)}")
            actions = AttackAction(**{k: None if v is None else torch.as_tensor(
                np.asarray(v) if not torch.is_tensor(v) else v, device=self.x.device)
                for k, v in actions.items()})
        if not isinstance(actions, AttackAction):
            raise TypeError(f"actions must be an AttackAction or a dict of the action space's "
                            f"keys, got {type(actions).__name__}")
        if self.n < self.num_envs:  # accept actions for every slot; the padding is ignored
            for name in ACTION_KEYS:
                value = getattr(actions, name)
                if value is not None and value.shape[0] == self.num_envs:
                    setattr(actions, name, value[:self.n])
        return actions

    def _configure(self, action: AttackAction) -> None:
        n, dev = self.n, self.x.device
        changed = False
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
                changed = True
        if not self._configured:
            init = action.init
            if init is not None and not self.requirements.differentiable:
                init = init.detach()
            if init is None and self.requirements.start_noise > 0:  # e.g. TRADES' KL attack
                init = self.requirements.start_noise * torch.randn(
                    self.x.shape, generator=self.generator, device=dev, dtype=self.x.dtype)
            self.state = self.geometry.start(self.x, self.eps, init, self.generator)
            if not self.requirements.differentiable:
                self.state = self.state.detach()
            self.delta0 = self.delta.detach().clone()
            self._configured = True
        if changed:  # one host sync per (re)configuration: the budgets' range
            lo, hi = torch.stack([self.budget.min(), self.budget.max()]).tolist()
            self._uniform_until = lo if not self._may_stop else 0
            self._budget_max = hi
        if action.stop is not None:
            self.stopped = self.stopped | action.stop.to(dev, torch.bool)
            self._may_stop, self._uniform_until = True, 0

    # -- the hot path --------------------------------------------------------------------
    def _evaluate(self, idx: torch.Tensor | None, delta: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward/backward on the samples ``idx`` (None = all) at perturbation ``delta``.

        Returns:
            grad (M, C, H, W) of the summed per-sample loss w.r.t. δ, loss (M,), correct (M,).
        """
        x = self.x if idx is None else self.x.index_select(0, idx)
        y = self.y if idx is None else self.y.index_select(0, idx)
        clean = self.extras.get(Extra.clean_logits.value)
        if clean is not None and idx is not None:
            clean = clean.index_select(0, idx)
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad(), target_mode(self.model, self.config.bn_mode is BnMode.train):
            logits = self.model(x + d)
            loss = attack_loss(self.config.loss, logits, y, clean)
            (grad,) = torch.autograd.grad(loss.sum(), d)
        self.samples_evaluated += d.shape[0]
        return grad, loss.detach(), logits.detach().argmax(1) == y

    def _write(self, name: str, idx: torch.Tensor | None, value: torch.Tensor) -> None:
        """Write rows ``idx`` of a per-sample tensor (None = all rows)."""
        if idx is None:
            setattr(self, name, value)
        else:
            getattr(self, name).index_copy_(0, idx, value)

    def _active_index(self) -> tuple[torch.Tensor | None, int]:
        """(indices of the active samples or None for all, their number)."""
        if self._steps_taken < self._uniform_until:  # every sample is active: no host sync
            return None, self.n
        idx = self.active_mask().nonzero().squeeze(1)  # host sync: sizes the active set
        m = idx.numel()
        return (None if m == self.n else idx), m

    def step(self, actions: AttackAction | dict[str, Any] | None
             ) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Apply the per-sample choices, then one projected ascent step for active samples.

        Returns:
            obs, reward (num_envs,), terminated (num_envs,) bool, truncated (num_envs,) bool
            (always False), info with ``num_active`` (host int: samples that moved) and
            ``episode_done`` (host bool: known without a sync that no sample can move again).
        """
        if not hasattr(self, "x"):
            raise RuntimeError("call reset() before step()")
        self._configure(self._as_action(actions))
        idx, m = self._active_index()
        if m:
            state = self.state.select(idx)
            delta = self.geometry.perturbation(state)
            if self._grad is not None:
                grad = self._grad if idx is None else self._grad.index_select(0, idx)
            else:
                grad, loss, correct = self._evaluate(idx, delta)
                self._record(idx, delta, grad, loss, correct)
            if self._first_grad_pending:
                self._first_grad_pending = False
                self.extras[Extra.first_grad.value] = (
                    grad if idx is None else torch.zeros_like(self.x).index_copy_(0, idx, grad))
            x = self.x if idx is None else self.x.index_select(0, idx)
            eps = self.eps if idx is None else self.eps.index_select(0, idx)
            alpha = self.alpha if idx is None else self.alpha.index_select(0, idx)
            new = self.geometry.ascend(state, grad, x, eps, alpha, self.generator)
            self.state = self.state.write(idx, new, inplace=not self.requirements.differentiable)
            if idx is None:
                self.steps += 1
            else:
                self.steps.index_add_(0, idx, torch.ones_like(idx))
            self._steps_taken += 1
            self._lockstep = self._lockstep and m == self.n
            self._grad = None
            if self.requirements.observe_after_step:
                moved = (idx if idx is not None else "all") if self.requirements.observe_final \
                    else None
                self._observe_new_iterate(moved)
        # without stops and with every sample moving at every step, all are done once the
        # largest budget is reached: the runner can end the episode without another sync
        done = (not self._may_stop and self._lockstep
                and self._steps_taken >= self._budget_max)
        terminated = self._pad(~self.active_mask())
        if self.n < self.num_envs:
            terminated[self.n:] = True
        truncated = torch.zeros_like(terminated)
        return (self._obs(), self._pad(self.loss), terminated, truncated,
                {"num_active": m, "episode_done": done})

    def _record(self, idx: torch.Tensor | None, delta: torch.Tensor, grad: torch.Tensor,
                loss: torch.Tensor, correct: torch.Tensor) -> None:
        for name, value in (("loss", loss), ("correct", correct)):
            self._write(name, idx, value)
        if self.requirements.keep_best:
            self._keep_best(idx, delta, loss)
        if self.geometry.has_fosc:
            eps = self.eps if idx is None else self.eps.index_select(0, idx)
            offset = delta.detach()
            if self.requirements.fosc_reference is FoscReference.start:
                offset = offset - (self.delta0 if idx is None else self.delta0.index_select(0, idx))
            fosc = self.geometry.fosc(grad, offset, eps)
            assert fosc is not None  # has_fosc
            self._write("fosc", idx, fosc)
        if idx is None:
            self.passes += 1
        else:
            self.passes.index_add_(0, idx, torch.ones_like(idx))

    def _keep_best(self, idx: torch.Tensor | None, delta: torch.Tensor, loss: torch.Tensor
                   ) -> None:
        """Rows ``idx`` of the best iterate so far: a later iterate (not the start) whose loss
        is at least the best one's replaces it."""
        steps = self.steps if idx is None else self.steps.index_select(0, idx)
        best = self.best_loss if idx is None else self.best_loss.index_select(0, idx)
        better = (steps > 0) & (loss >= best)
        new_loss = torch.where(better, loss, best)
        old = self.best_delta if idx is None else self.best_delta.index_select(0, idx)
        new_delta = torch.where(better.view(-1, *[1] * (delta.dim() - 1)), delta.detach(), old)
        self._write("best_loss", idx, new_loss)
        self._write("best_delta", idx, new_delta)

    def _observe_new_iterate(self, moved: torch.Tensor | str | None = None) -> None:
        """Evaluate the samples that can still move at their new iterate; cache the gradient.

        ``moved``: evaluate these samples instead ((M,) int64, or ``"all"``): with
        ``observe_final``, every sample that has just moved, including those that used up
        their budget.
        """
        if moved is None:
            idx_all = self.active_mask().nonzero().squeeze(1)  # host sync
            m = idx_all.numel()
            idx = None if m == self.n else idx_all
        elif isinstance(moved, str):
            idx, m = None, self.n
        else:
            idx, m = moved, moved.numel()
        if not m:
            return
        delta = self.geometry.perturbation(self.state.select(idx))
        grad, loss, correct = self._evaluate(idx, delta)
        self._record(idx, delta, grad, loss, correct)
        if idx is None:
            self._grad = grad
        else:
            self._grad = torch.zeros_like(self.x).index_copy_(0, idx, grad)

    def close_extras(self, **kwargs: Any) -> None:
        """Drop references to the batch."""
        for name in ("x", "y", "state", "_grad", "best_delta", "best_loss"):
            if hasattr(self, name):
                delattr(self, name)
