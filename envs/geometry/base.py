"""The threat-geometry protocol: what every geometry (L∞, L2, L0, ...) owns, plus its registry.

Dimension letters used throughout the project (defined once, here):
    N  samples in the batch (= sub-environments of the attack env)
    C, H, W  image channels, height, width
    K  number of classes

A geometry owns everything norm-specific about an attack:

* its per-sample **attack state** (:class:`AttackState`: δ for L∞/L2; a magnitude and mask
  logits for L0), how a state starts from a policy's initial perturbation (:meth:`Geometry.start`),
  how one ascent step changes it (:meth:`Geometry.ascend`), and the perturbation it stands for
  (:meth:`Geometry.perturbation`);
* projection onto the budget's ball ∩ the [0, 1] image box, the size of a perturbation, a
  uniform random start, and the FOSC stationarity value (``None`` where a geometry has none);
* the **unit of its budget** (:class:`BudgetUnit`: a float ε, or an integer pixel count k),
  the nominal budget its own config sets (:meth:`Geometry.nominal_budget`), its per-data-set
  default budget, the step size that is a given fraction of its step scale
  (:meth:`Geometry.step_size`), the budget that can erase any image (masking checks), the
  grids learned strategies search over, AutoAttack's name for its norm
  (:attr:`Geometry.autoattack_norm`), and per-geometry defaults of AT-loss fields
  (:attr:`Geometry.at_loss_defaults`, e.g. sTRADES' β = 3 for L0).

Which evaluation attacks apply to a geometry, and which of them play the roles of the
gradient-masking checks, is registered per geometry id in :mod:`envs.attacks.registry` (the
built-in ones in :mod:`envs.attacks.catalog`), not here.

Nothing outside ``envs/geometry/`` branches on the geometry's kind: callers ask it.

Per-sample parameters (``eps``, ``alpha``) are tensors of shape ``(N,)`` (or python floats,
broadcast to all samples). Inputs are images in ``[0, 1]``; ``delta = x_adv - x``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, ClassVar

import torch

from learned_at.envs.options import setting, check_limits
from learned_at.envs.registry import Registry

Scalar = float | torch.Tensor


class BudgetUnit(str, Enum):
    """What a geometry's budget counts."""

    radius = "radius"  # a float radius ε in input units ([0, 1] pixels)
    pixels = "pixels"  # an integer number k of changed pixels


def per_sample(value: Scalar, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a float or an ``(N,)`` tensor to ``(N, 1, 1, 1)`` against ``like`` (N, ...)."""
    if not torch.is_tensor(value):
        value = torch.full((like.shape[0],), float(value), device=like.device, dtype=like.dtype)
    return value.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def flat_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample p-norm of ``t`` (N, ...) -> (N,)."""
    return torch.linalg.vector_norm(t.flatten(1), ord=p, dim=1)


def clip_to_box(delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Clip ``delta`` so that ``x + delta`` lies in the image box [0, 1]. Shapes (N, C, H, W)."""
    return (x + delta).clamp(0.0, 1.0) - x


class AttackState:
    """A geometry's per-sample attack state: named tensors that all have N rows.

    Opaque to the env, which only selects and writes rows (active-set compaction) and asks the
    geometry for the perturbation. L∞/L2 hold ``{"delta"}``; other geometries hold what their
    attack needs (L0: magnitude and mask logits).

    Args:
        tensors: name -> tensor of shape (N, ...).
    """

    __slots__ = ("tensors",)

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = dict(tensors)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def select(self, idx: torch.Tensor | None) -> AttackState:
        """Rows ``idx`` (M,) int64 of every tensor (``None``: all rows, no copy)."""
        if idx is None:
            return self
        return AttackState({k: v.index_select(0, idx) for k, v in self.tensors.items()})

    def write(self, idx: torch.Tensor | None, rows: AttackState, inplace: bool) -> AttackState:
        """This state with rows ``idx`` replaced by ``rows`` (in place unless ``inplace=False``,
        which keeps autograd graphs intact: the differentiable mode)."""
        if idx is None:
            return rows
        if inplace:
            for k, v in self.tensors.items():
                v.index_copy_(0, idx, rows.tensors[k].to(v.dtype))
            return self
        return AttackState({k: v.index_copy(0, idx, rows.tensors[k].to(v.dtype))
                            for k, v in self.tensors.items()})

    def detach(self) -> AttackState:
        """A copy without autograd history (same storage)."""
        return AttackState({k: v.detach() for k, v in self.tensors.items()})

    def clone(self) -> AttackState:
        """A deep copy (own storage, so in-place row writes leave the original intact)."""
        return AttackState({k: v.clone() for k, v in self.tensors.items()})


@dataclass(frozen=True)
class GeometryConfig:
    """Fields shared by every geometry's config (``threat=<name>`` on the command line)."""

    name: str = setting("linf", "registry id of the geometry.")
    eps: float | None = setting(None, "the nominal budget in the geometry's unit; None = the data "
                                      "set's preset.")


class Geometry:
    """Base class of the threat geometries (see the module docstring). Stateless apart from its
    config; cheap to construct.

    Subclasses set the class attributes and implement the tensor maths. The defaults here are
    those of an *additive* geometry whose state is δ itself (L∞, L2).

    Attributes:
        name: registry id (set by :func:`register_geometry`).
        budget_unit: what the budget counts.
        autoattack_norm: AutoAttack's name for this norm (``"Linf"``, ``"L2"``) or None when the
            standard AutoAttack does not apply (envs/attacks/autoattack.py reads it).
        default_budgets: data set -> nominal budget.
        has_corner_init: :meth:`corner_init` is defined (FGSM-PGI's reference start).
        budget_symbol: how tables and check messages name the budget (``ε``, ``k``).
        budget_setting: the override that sets the budget, as messages name it.
        at_loss_defaults: AT-loss id -> {config field: value} for fields the user left at
            None (e.g. L0: sTRADES' β = 3 and a CE attack).
    """

    name: ClassVar[str] = "base"
    budget_unit: ClassVar[BudgetUnit] = BudgetUnit.radius
    autoattack_norm: ClassVar[str | None] = None
    default_budgets: ClassVar[dict[str, float]] = {}
    budget_setting: ClassVar[str] = "threat.eps=<value>"
    has_corner_init: ClassVar[bool] = False
    budget_symbol: ClassVar[str] = "ε"
    at_loss_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: GeometryConfig | None = None) -> None:
        self.config = config if config is not None else GeometryConfig(name=self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- budgets -----------------------------------------------------------------------
    def nominal_budget(self) -> float | None:
        """The budget the geometry's own config sets (``threat.eps``; L0: ``threat.k``), or
        None for the data set's preset (:meth:`default_budget`)."""
        eps = getattr(self.config, "eps", None)
        return None if eps is None else float(eps)

    def with_budget(self, budget: float) -> Geometry:
        """This geometry with its config's nominal budget set to ``budget`` (a run's resolved
        threat; L0 sets ``threat.k``)."""
        return type(self)(dataclasses.replace(self.config, eps=float(budget)))

    def step_size(self, eps: Scalar, ratio: float) -> Scalar:
        """The step size that is ``ratio`` of this geometry's step scale, per sample.

        For L∞/L2 the scale is the budget itself (PGD's α = ε/4 is ``ratio=0.25``); a geometry
        whose budget is not a length (L0 counts pixels) scales by its own magnitude bound.
        Shape: eps float or (N,); returns the same kind.
        """
        return ratio * eps

    def scaled_budget(self, eps: float, factor: float) -> float:
        """``factor`` times a nominal budget, as this geometry can spend it (L0: whole pixels)."""
        return factor * eps

    def default_budget(self, data: str) -> float:
        """The data set's nominal budget; unknown data sets name the field to set."""
        if data not in self.default_budgets:
            raise ValueError(f"no default budget for data={data} under threat={self.name}; set "
                             f"{self.budget_setting} (presets: {', '.join(self.default_budgets)})")
        return float(self.default_budgets[data])

    def check_budget(self, eps: float, image_shape: tuple[int, int, int]) -> str | None:
        """A one-line problem with a nominal budget (the value and the accepted range), or None
        when it is valid."""
        if not eps >= 0:
            return f"threat.eps={eps:g} is out of range: accepted [0, inf) for threat={self.name}"
        return None

    def check_config(self, image_shape: tuple[int, int, int]) -> list[str]:
        """Problems with this geometry's config fields, one line each (field, value, accepted
        range): the fields' declared ``limits`` (:func:`envs.options.check_limits`) and the
        budget (:meth:`check_budget`). Run when the run's config is composed, before any work;
        a geometry with fields of its own checks them here (or declares their ``limits``)."""
        problems = check_limits(self.config, "threat")
        budget = self.nominal_budget()
        if budget is not None and not problems:
            problem = self.check_budget(budget, image_shape)
            if problem:
                problems.append(problem)
        return problems

    def budget_warning(self, eps: float, image_shape: tuple[int, int, int]) -> str | None:
        """A warning for a legal but suspicious budget, or None: here, a budget at which any
        image can be erased (:meth:`erasing_budget`), so robust accuracy is 0 by construction."""
        try:
            erasing = self.erasing_budget(image_shape)
        except NotImplementedError:
            return None
        if eps >= erasing:
            return (f"threat.eps={eps:g} is at least {erasing:g}, the {self.name} budget that can "
                    "turn any image in [0, 1] into another: robust accuracy is 0 by construction "
                    "(did you mean a budget in [0, 1] pixel units, e.g. 8/255 = 0.0314?)")
        return None

    def erasing_budget(self, image_shape: tuple[int, ...]) -> float:
        """A budget at which any image in [0, 1] can be turned into any other (or grey)."""
        raise NotImplementedError

    def strategy_grids(self, unit: float, eps_multiples: tuple[int, ...],
                       alpha_multiples: tuple[int, ...]) -> tuple[tuple[float, ...],
                                                                   tuple[float, ...]]:
        """The (ε grid, α grid) a learned strategy chooses from: multiples of a budget unit
        (LAS-AT's grids are multiples of ε/8, docs/references.md §1.3), in this geometry's units."""
        return (tuple(unit * k for k in eps_multiples), tuple(unit * k for k in alpha_multiples))

    # -- state -------------------------------------------------------------------------
    def start(self, x: torch.Tensor, eps: Scalar, delta0: torch.Tensor | None,
              generator: torch.Generator | None = None) -> AttackState:
        """The state at the start of an episode, from a policy's initial perturbation.

        Shape:
            x: (N, C, H, W); eps: float or (N,); delta0: (N, C, H, W) or None (δ = 0).
            The start is projected onto the ball ∩ box (differentiably: a generator's output
            keeps its graph). ``generator`` serves geometries whose state has random parts.
        """
        delta = torch.zeros_like(x) if delta0 is None else self.project(delta0, x, eps)
        return AttackState({"delta": delta})

    def perturbation(self, state: AttackState) -> torch.Tensor:
        """The perturbation δ (N, C, H, W) a state stands for (differentiable in the state)."""
        return state["delta"]

    def ascend(self, state: AttackState, grad: torch.Tensor, x: torch.Tensor, eps: Scalar,
               alpha: Scalar, generator: torch.Generator | None = None) -> AttackState:
        """One projected ascent step.

        Shape:
            grad: (N, C, H, W), the gradient of the summed per-sample attack loss w.r.t. the
            adversarial input at ``x + perturbation(state)``; x: (N, C, H, W); eps, alpha:
            float or (N,). Out of place: a state with a graph keeps it (differentiable mode).
        """
        delta = self.project(self.step(state["delta"], grad, alpha), x, eps)
        return AttackState({"delta": delta})

    # -- pure maths ----------------------------------------------------------------------
    def step(self, delta: torch.Tensor, grad: torch.Tensor, alpha: Scalar) -> torch.Tensor:
        """Unprojected ascent step of δ along ``grad``. (N, C, H, W)."""
        raise NotImplementedError

    def project(self, delta: torch.Tensor, x: torch.Tensor, eps: Scalar) -> torch.Tensor:
        """Project δ onto the budget's ball ∩ the image box. (N, C, H, W)."""
        raise NotImplementedError

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample size of δ in this geometry's unit. (N, ...) -> (N,)."""
        raise NotImplementedError

    def random_delta(self, x: torch.Tensor, eps: Scalar,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """A uniform random start inside the ball and the box. Returns δ (N, C, H, W)."""
        raise NotImplementedError

    def corner_init(self, x: torch.Tensor, eps: Scalar,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """A random corner of the ball (FGSM-PGI's reference start); only where defined."""
        raise ValueError(f"a corner start is not defined for threat={self.name}")

    def fosc(self, grad: torch.Tensor, offset: torch.Tensor, eps: Scalar) -> torch.Tensor | None:
        """First-order stationarity c = max over the ball of ⟨x' − xᵏ, g⟩, per sample (N,), or
        None where the geometry has no such measure. ``offset`` is xᵏ − x⁰."""
        return None

    @property
    def has_fosc(self) -> bool:
        """Whether :meth:`fosc` returns values (Dynamic AT's stopping rule needs them)."""
        return type(self).fosc is not Geometry.fosc

    def inactive_mask(self, delta: torch.Tensor, x: torch.Tensor, eps: Scalar,
                      tol: float = 1e-7) -> torch.Tensor | None:
        """1 where no constraint of the ball ∩ box is active at δ, else 0; None where undefined.

        Defined only for geometries whose :meth:`project` acts coordinate by coordinate: there
        the mask is the diagonal of the projection's Jacobian at an interior-or-clipped point
        (Fast-BAT's H, from the KKT conditions). A coordinate within ``tol`` of a bound counts
        as at the bound.

        Shape:
            delta, x: (N, C, H, W); eps: float or (N,). Returns (N, C, H, W) in {0, 1}, δ's dtype.
        """
        return None

    @property
    def has_inactive_mask(self) -> bool:
        """Whether :meth:`inactive_mask` is defined (Fast-BAT's implicit gradient needs it)."""
        return type(self).inactive_mask is not Geometry.inactive_mask


GEOMETRIES: Registry[GeometryConfig, Geometry] = Registry(
    "geometry", "learned_at.envs.geometry.catalog")


def register_geometry(config_cls: type[GeometryConfig]
                      ) -> Callable[[type[Geometry]], type[Geometry]]:
    """Class decorator: register a geometry under ``config_cls().name``."""
    return GEOMETRIES.register(config_cls)


def geometry_registry() -> dict[str, tuple[type[GeometryConfig], type[Geometry]]]:
    """All geometries: id -> (config class, geometry class). Imports the built-in ones."""
    return GEOMETRIES.entries()


def make_geometry(config: GeometryConfig | str | Any) -> Geometry:
    """Build a geometry from its config (or its name); unknown names list the valid ones."""
    registry = geometry_registry()
    name = config if isinstance(config, str) else config.name
    if name not in registry:
        raise ValueError(f"unknown threat {name!r}; valid: {', '.join(sorted(registry))}")
    config_cls, cls = registry[name]
    return cls(config_cls(name=name) if isinstance(config, str) else config)
