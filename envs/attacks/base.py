"""The evaluation-attack interface: one attack = one small class (torchattacks / AutoAttack style).

An evaluation attack measures robustness: for a model, images ``x`` and labels ``y`` it returns
the per-example robustness mask (robust = still classified correctly after the attack). Each
attack is a frozen dataclass whose fields are its settings (steps, restarts, queries) and whose
``name`` is how the user wrote it (``pgd50x10``); the class

* recognises its own spelling (:meth:`EvalAttack.parse`, e.g. ``pgd<K>[x<R>]``; nothing else
  parses names) and describes it (:attr:`EvalAttack.spelling`, for error messages);
* computes the mask (:meth:`EvalAttack.robust_mask`) from a small typed
  :class:`AttackContext` (batch size, generator, seed, surrogate, resumable-state folder), plus
  per-stage results where it has stages (AutoAttack, Sparse-AutoAttack);
* declares what it is for the gradient-masking checks (``runners/masking_checks.py``):
  :class:`AttackRole`, whether the strong ensemble must not be weaker than it
  (:attr:`EvalAttack.ensemble_reference`), how two instances compare in strength
  (:meth:`EvalAttack.strength`), a stronger variant for the checks' sweep
  (:meth:`EvalAttack.stronger`) and, for a query-based black-box attack, an instance with a
  given query budget (:meth:`EvalAttack.with_queries`).

Which attacks apply to which threat geometry is the registry's business
(:mod:`envs.attacks.registry`); the built-in classes are registered in
:mod:`envs.attacks.catalog`.

Most attacks perturb one batch at a time and let the model's eval-mode prediction decide:
:class:`BatchAttack` holds that loop, and a subclass only writes :meth:`BatchAttack.perturb`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Flag, auto
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from learned_at.envs.geometry.base import Geometry


class AttackRole(Flag):
    """What an attack is for the gradient-masking checks (an attack may have several roles)."""

    NONE = 0
    CLEAN = auto()     # no perturbation: the clean accuracy (the ε = 0 point of the sweep)
    WHITEBOX = auto()  # a white-box gradient attack: the side obfuscated gradients can fool
    BLACKBOX = auto()  # scores only, or a surrogate's gradients: must not beat the white-box
    ENSEMBLE = auto()  # a strong ensemble (AutoAttack): must not be weaker than PGD


@dataclass(frozen=True)
class AttackContext:
    """What an evaluation attack may use besides the model, the data and the threat.

    Attributes:
        batch_size: examples per attack call (and per resumable-state save).
        generator: random starts and draws of our own attacks (PGD, CW, sPGD, Sparse-RS).
        seed: seed of pyautoattack's adversaries (AutoAttack, Square).
        progress: progress bars (attack name and examples done).
        surrogate: the model transfer attacks are crafted on; None = no surrogate.
        state_dir: folder of resumable state (AutoAttack, Square); None = not resumable.
        make_adversary: AutoAttack factory override ``(model, geometry, eps, seed, device) ->
            adversary`` (tests only; reported numbers use the standard version).
    """

    batch_size: int = 500
    generator: torch.Generator | None = None
    seed: int = 0
    progress: bool = False
    surrogate: nn.Module | None = None
    state_dir: Path | None = None
    make_adversary: Callable[..., Any] | None = None


@dataclass(frozen=True)
class AttackOutcome:
    """An attack's result on N examples.

    Attributes:
        robust: (N,) bool, still classified correctly after the attack.
        stages: per stage of a multi-stage attack, ``{"acc": accuracy after the stages so far,
            "time_s": seconds}`` (empty for a single-stage attack).
    """

    robust: torch.Tensor
    stages: dict[str, dict[str, float]] = field(default_factory=dict)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Eval-mode predictions (N,) int64 for a tensor of images (N, C, H, W) (mode restored)."""
    was = model.training
    model.eval()
    preds = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    model.train(was)
    return preds


class EvalAttack:
    """Base class of the evaluation attacks (module docstring). Subclasses are frozen
    dataclasses whose first field is ``name``.

    Attributes:
        name: the attack as the user wrote it (``pgd50x10``); results are keyed by it.
        spelling: how names of this class are written, for messages (``pgd<K>[x<R>]``).
        roles: what the attack is for the gradient-masking checks.
        ensemble_reference: the ensemble (AutoAttack) must not be weaker than this attack
            (PGD, sPGD; not CW or FGSM).
        transferable: a transfer attack may craft this attack on a surrogate.
        needs_surrogate: the attack needs ``AttackContext.surrogate`` (transfer attacks).
    """

    name: str
    spelling: ClassVar[str] = ""
    roles: ClassVar[AttackRole] = AttackRole.NONE
    ensemble_reference: ClassVar[bool] = False
    transferable: ClassVar[bool] = False
    needs_surrogate: ClassVar[bool] = False

    @classmethod
    def parse(cls, name: str) -> EvalAttack | None:
        """The attack ``name`` (stripped) spells, if it is this class's spelling, else None."""
        raise NotImplementedError

    def robust_mask(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    geometry: Geometry, eps: float, context: AttackContext) -> AttackOutcome:
        """Per-example robustness of ``model`` under this attack, in batches.

        Shape:
            x: (N, C, H, W) in [0, 1] on the model's device; y: (N,) int64; eps: the budget in
            the geometry's unit. Returns an :class:`AttackOutcome` with ``robust`` (N,) bool.
        """
        raise NotImplementedError

    # -- what the gradient-masking checks ask ---------------------------------------------
    def strength(self) -> tuple[int, ...] | None:
        """Numbers that order instances of this class (steps, restarts, queries), or None when
        instances are not compared (:meth:`not_stronger_than`)."""
        return None

    def not_stronger_than(self, other: EvalAttack) -> bool:
        """``other`` is this attack with at least as much of everything: the same class, and
        every component of its :meth:`strength` is ≥ (so it must not score higher)."""
        mine, theirs = self.strength(), other.strength()
        return (type(self) is type(other) and mine is not None and theirs is not None
                and all(b >= a for a, b in zip(mine, theirs)))

    def stronger(self) -> EvalAttack | None:
        """A stronger instance of the same attack for the checks' sweep (PGD-K → PGD-2Kx2), or
        None when there is none."""
        return None

    @classmethod
    def with_queries(cls, queries: int) -> EvalAttack:
        """An instance with ``queries`` queries (query-based black-box attacks only)."""
        raise NotImplementedError(f"{cls.__name__} has no query budget")

    @classmethod
    def crafted_from(cls, source: EvalAttack) -> EvalAttack | None:
        """This surrogate attack crafting ``source`` (transfer attacks only), or None when
        ``source`` cannot be transferred."""
        raise NotImplementedError(f"{cls.__name__} crafts no other attack")

    @classmethod
    def default(cls) -> EvalAttack:
        """The instance of the bare spelling (``clean``); the checks build the clean row with it."""
        raise NotImplementedError(f"{cls.__name__} has no parameter-free instance")

    @classmethod
    def check_available(cls) -> None:
        """Raise ImportError (saying how to install it) when an optional dependency is missing."""

    def requires(self) -> tuple[type[EvalAttack], ...]:
        """The attack classes a geometry must register for this instance to apply to it."""
        return (type(self),)

    def tags(self) -> dict[str, str]:
        """Tags an evaluation that ran this attack logs (e.g. the AutoAttack version)."""
        return {}


class BatchAttack(EvalAttack):
    """An attack that perturbs one batch at a time; an example is robust when the model's
    eval-mode prediction of its adversarial example is still correct."""

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, geometry: Geometry,
                eps: float, generator: torch.Generator | None) -> torch.Tensor:
        """Adversarial examples of one batch, crafted on ``model``.

        Shape:
            x: (n, C, H, W) in [0, 1]; y: (n,) int64. Returns x_adv (n, C, H, W).
        """
        raise NotImplementedError

    def crafting_model(self, model: nn.Module, context: AttackContext) -> nn.Module:
        """The model the examples are crafted on (the evaluated one; transfer: the surrogate)."""
        return model

    def robust_mask(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    geometry: Geometry, eps: float, context: AttackContext) -> AttackOutcome:
        crafter = self.crafting_model(model, context)
        bs, out = context.batch_size, []
        for i in tqdm(range(0, len(x), bs), desc=f"eval {self.name}", leave=False,
                      disable=not context.progress):
            xb, yb = x[i:i + bs], y[i:i + bs]
            x_adv = self.perturb(crafter, xb, yb, geometry, eps, context.generator)
            out.append(predict(model, x_adv, bs) == yb)
        return AttackOutcome(torch.cat(out))


@dataclass(frozen=True)
class Clean(BatchAttack):
    """No attack: the clean accuracy (``clean``)."""

    name: str = "clean"
    spelling: ClassVar[str] = "clean"
    roles: ClassVar[AttackRole] = AttackRole.CLEAN

    @classmethod
    def parse(cls, name: str) -> Clean | None:
        return cls(name) if name == "clean" else None

    @classmethod
    def default(cls) -> Clean:
        return cls()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, geometry: Geometry,
                eps: float, generator: torch.Generator | None) -> torch.Tensor:
        return x
