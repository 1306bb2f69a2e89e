"""What a policy or an AT loss needs the attack env to compute: a typed, mergeable record."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum


class Extra(str, Enum):
    """Costly observation extras, computed only when someone asks for them.

    ``clean_grad_sign``: sign of ∇ₓ CE at the clean point, (N, C, H, W), computed at reset
    (FGSM-SDI's generator input; also fills ``clean_logits``). ``clean_logits``: the target's
    logits at the clean point, (N, K), computed at reset. ``first_grad``: the attack-loss
    gradient at the initial point x + δ₀, (N, C, H, W), zeros for samples with budget 0
    (FGSM-PGI's momentum prior, Fast-BAT's linearisation).
    """

    clean_grad_sign = "clean_grad_sign"
    clean_logits = "clean_logits"
    first_grad = "first_grad"


class FoscReference(str, Enum):
    """x⁰ of the FOSC value: the clean input (Dynamic AT's paper) or the attack's start point
    x + δ₀ (its reference code)."""

    natural = "natural"
    start = "start"


class BnMode(str, Enum):
    """BatchNorm mode of the target during attack steps."""

    eval = "eval"    # running statistics untouched (default)
    train = "train"  # attack through batch statistics; updates running stats every step


@dataclass(frozen=True)
class EnvRequirements:
    """What the env must compute for its users (policies, AT losses); merged with :meth:`merge`.

    Attributes:
        extras: observation extras (see :class:`Extra`).
        observe_after_step: evaluate each new iterate right after its update (policies that
            decide per step on the new iterate, e.g. FOSC stopping); the gradient is reused by
            the next step, so the extra pass is only paid by samples that then stop.
        observe_final: with ``observe_after_step``, also evaluate the new iterate of samples
            that have just used up their budget, so loss/correct/FOSC describe every sample's
            *final* example (one extra pass per such sample).
        differentiable: keep the autograd graph from the initial perturbation (a generator's
            output) to the final example.
        fosc_reference: x⁰ of the FOSC value.
        start_noise: when the policy gives no start (``init``), start at δ₀ = start_noise ·
            N(0, 1) (projected) instead of δ₀ = 0; 0 = no noise. TRADES asks for 0.001 (its
            reference's start: at δ = 0 the KL gradient is round-off). Drawn with the
            episode's generator. Merged as the larger of the two.
        keep_best: a sample whose final iterate does not fool the model ends at its
            highest-loss iterate after the start (ties to the later one) if that loss is at
            least its clean loss, else at the clean point — sPGD's training attack (meant with
            stop-on-success, which ends a fooled sample at its fooling iterate). Implies
            ``observe_after_step`` and ``observe_final`` (every iterate is evaluated) and costs
            one forward pass at the clean point; not with ``differentiable``.
    """

    extras: frozenset[Extra] = frozenset()
    observe_after_step: bool = False
    observe_final: bool = False
    differentiable: bool = False
    fosc_reference: FoscReference = FoscReference.natural
    start_noise: float = 0.0
    keep_best: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "extras", frozenset(Extra(e) for e in self.extras))
        object.__setattr__(self, "fosc_reference", FoscReference(self.fosc_reference))
        if not self.start_noise >= 0:
            raise ValueError(f"start_noise must be >= 0, got {self.start_noise}")
        if self.keep_best:
            if self.differentiable:
                raise ValueError("keep_best selects among detached iterates: it cannot be "
                                 "combined with differentiable")
            object.__setattr__(self, "observe_after_step", True)
            object.__setattr__(self, "observe_final", True)

    def merge(self, other: EnvRequirements) -> EnvRequirements:
        """Union of two requirements; two different non-default FOSC references conflict."""
        refs = {self.fosc_reference, other.fosc_reference} - {FoscReference.natural}
        if len(refs) > 1:  # pragma: no cover - only two values exist
            raise ValueError(f"conflicting FOSC references {sorted(r.value for r in refs)}")
        return replace(self, extras=self.extras | other.extras,
                       observe_after_step=self.observe_after_step or other.observe_after_step,
                       observe_final=self.observe_final or other.observe_final,
                       differentiable=self.differentiable or other.differentiable,
                       fosc_reference=refs.pop() if refs else FoscReference.natural,
                       start_noise=max(self.start_noise, other.start_noise),
                       keep_best=self.keep_best or other.keep_best)
