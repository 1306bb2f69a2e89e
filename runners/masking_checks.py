"""Gradient-masking sanity checks (Athalye, Carlini & Wagner 2018; Carlini et al. 2019, §5).

A robustness number is suspect when the attack that measured it was fooled by the model
(obfuscated gradients). Five checks, each a pure function of accuracies so it is testable on
hand-made numbers, and :func:`run_masking_checks` computes the numbers they need (reusing those
already in the evaluation results):

* ``eps_monotone``: robust accuracy does not rise as ε grows (0, ε/4, ε/2, ε, large ε).
* ``large_eps``: at the geometry's erasing budget (0.5 for L∞ on [0, 1] pixels, where every
  image can be moved to the constant grey image; 0.5·√d for L2) accuracy is near 0.
* ``autoattack_le_pgd``: AutoAttack accuracy ≤ PGD accuracy.
* ``blackbox_ge_whitebox``: no black-box attack (transfer from a surrogate, Square) beats the
  best gradient attack.
* ``stronger_not_better``: more steps or more restarts of the same attack never raise
  accuracy.

Every geometry-specific choice comes from the geometry: which budgets the sweep can spend
(:meth:`~envs.geometry.base.Geometry.scaled_budget`) and the erasing budget; and from the
evaluation attacks registered for it (:mod:`envs.attacks.registry`): the strong ensemble, the
query-based black-box attack the check runs with ``square_queries`` queries, and the surrogate
(transfer) attack. Which evaluated attack plays which part is read from the attack objects'
typed attributes (:class:`~envs.attacks.base.AttackRole`: clean, white-box, black-box,
ensemble; ``ensemble_reference``; :meth:`~envs.attacks.base.EvalAttack.strength` and
:meth:`~envs.attacks.base.EvalAttack.stronger`), never from their names. For L0 the same five
checks read: the
accuracy falls as k grows (whole pixels 0, ⌊k/4⌋, ⌊k/2⌋, k, H·W; at H·W every image can be
erased); Sparse-AutoAttack ≤ every sPGD; the black-box Sparse-RS does not beat the white-box
sPGD (when it does, white-box sPGD alone overestimates robustness, as in the Fast-LS-ℓ0
paper's sAT example, 75.9 % under sPGD vs 36.2 % under Sparse-RS: report sAA, which includes
Sparse-RS, and treat the gradient numbers as suspect); more sPGD steps never help.

"Beyond noise": an accuracy may exceed the one it should not exceed by at most
``z·sqrt(p(1-p)/n) + 1/n`` (binomial standard error at the larger accuracy, plus one example).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import torch
from torch import nn

from learned_at.envs.options import setting
from learned_at.envs.attacks.base import AttackRole, EvalAttack
from learned_at.envs.attacks.registry import GeometryAttacks, geometry_attacks
from learned_at.envs.geometry.base import Geometry
from learned_at.runners.robustness import evaluate, parse_attack

__all__ = ["CheckConfig", "CheckResult", "check_autoattack_le_pgd",
           "check_blackbox_ge_whitebox", "check_eps_monotone", "check_large_eps",
           "check_stronger_not_better", "default_large_eps", "log_checks", "noise_margin",
           "report_checks", "run_masking_checks"]


@dataclass(frozen=True)
class CheckConfig:
    """Settings of the gradient-masking checks."""

    attack: str = setting("pgd20", "gradient attack used for the ε sweep (and the white-box side "
                                   "of comparisons); for L0 pgd<K> is K steps of the geometry's "
                                   "sPGD.")
    eps_factors: tuple[float, ...] = setting((0.25, 0.5, 1.0), "the sweep's budgets as multiples "
                                                               "of the evaluation ε.")
    large_eps: float | None = setting(None, "the 'everything breaks' budget; None = 0.5 (L∞) or "
                                            "0.5·√(C·H·W) (L2).")
    large_eps_max_acc: float = setting(0.1, "highest accuracy accepted at large_eps.")
    square_queries: int = setting(1000, "queries of the geometry's black-box attack (Square; L0: "
                                        "Sparse-RS) when none is in the evaluation (0 = do not "
                                        "run it).")
    z: float = setting(2.0, "noise tolerance in binomial standard errors.")


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome.

    Attributes:
        name: check id (metric ``check/<name>``).
        status: ``pass``, ``fail`` or ``skip``.
        detail: one line with the numbers and the rule.
        numbers: the accuracies (and budgets) the check used.
    """

    name: str
    status: str
    detail: str
    numbers: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def noise_margin(p: float, n: int, z: float = 2.0) -> float:
    """How far an accuracy ``p`` measured on ``n`` examples may move by chance."""
    return z * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1)) + 1.0 / max(n, 1)


def _verdict(ok: bool) -> str:
    return "pass" if ok else "fail"


def check_eps_monotone(curve: list[tuple[float, float]], n: int, z: float = 2.0,
                       symbol: str = "ε") -> CheckResult:
    """Accuracy must not rise (beyond noise) along ``curve`` = [(budget, acc)] sorted by budget
    (``symbol`` names the budget in the message: ε, or k for L0)."""
    curve = sorted(curve)
    rises = [(e0, a0, e1, a1) for (e0, a0), (e1, a1) in zip(curve, curve[1:])
             if a1 > a0 + noise_margin(max(a0, a1), n, z)]
    numbers = {f"acc_eps_{e:.4g}": a for e, a in curve}
    text = ", ".join(f"{symbol}={e:.4g}: {a:.4f}" for e, a in curve)
    if rises:
        e0, a0, e1, a1 = rises[0]
        return CheckResult("eps_monotone", "fail", f"accuracy rises from {a0:.4f} at "
                           f"{symbol}={e0:.4g} to {a1:.4f} at {symbol}={e1:.4g} ({text})",
                           numbers)
    return CheckResult("eps_monotone", "pass", f"accuracy falls as {symbol} grows ({text})",
                       numbers)


def check_large_eps(acc: float, eps: float, max_acc: float, symbol: str = "ε") -> CheckResult:
    """Accuracy at a budget that can erase the image must be near 0."""
    return CheckResult("large_eps", _verdict(acc <= max_acc),
                       f"accuracy {acc:.4f} at {symbol}={eps:.4g} (must be ≤ {max_acc:.4f})",
                       {"acc": acc, "eps": eps, "max_acc": max_acc})


def check_autoattack_le_pgd(aa_acc: float, pgd_name: str, pgd_acc: float, n: int,
                            z: float = 2.0, aa_name: str = "AutoAttack") -> CheckResult:
    """AutoAttack (L0: Sparse-AutoAttack, ``aa_name``) must not be weaker than PGD (L0: sPGD)
    beyond noise."""
    ok = aa_acc <= pgd_acc + noise_margin(max(aa_acc, pgd_acc), n, z)
    return CheckResult("autoattack_le_pgd", _verdict(ok),
                       f"{aa_name} {aa_acc:.4f} vs {pgd_name} {pgd_acc:.4f} (must be ≤)",
                       {"autoattack_acc": aa_acc, "pgd_acc": pgd_acc})


def check_blackbox_ge_whitebox(blackbox: dict[str, float], whitebox: dict[str, float], n: int,
                               z: float = 2.0) -> CheckResult:
    """The best black-box attack must not beat the best white-box (gradient) attack."""
    bb_name, bb = min(blackbox.items(), key=lambda kv: kv[1])
    wb_name, wb = min(whitebox.items(), key=lambda kv: kv[1])
    ok = bb >= wb - noise_margin(max(bb, wb), n, z)
    return CheckResult("blackbox_ge_whitebox", _verdict(ok),
                       f"black-box {bb_name} {bb:.4f} vs white-box {wb_name} {wb:.4f} "
                       "(black-box must be ≥)", {"blackbox_acc": bb, "whitebox_acc": wb})


def check_stronger_not_better(accs: dict[str, float], n: int, z: float = 2.0) -> CheckResult:
    """For attacks of one class, more steps, restarts or queries must not raise accuracy
    (:meth:`~envs.attacks.base.EvalAttack.not_stronger_than`)."""
    attacks = {name: parse_attack(name) for name in accs}
    pairs = [(a, b) for a, sa in attacks.items() for b, sb in attacks.items()
             if a != b and sa.not_stronger_than(sb)]
    if not pairs:
        return CheckResult("stronger_not_better", "skip", "no weaker/stronger attack pair")
    bad = [(a, b) for a, b in pairs
           if accs[b] > accs[a] + noise_margin(max(accs[a], accs[b]), n, z)]
    text = ", ".join(f"{b} {accs[b]:.4f} ≤ {a} {accs[a]:.4f}" for a, b in pairs)
    if bad:
        a, b = bad[0]
        return CheckResult("stronger_not_better", "fail",
                           f"stronger {b} {accs[b]:.4f} > weaker {a} {accs[a]:.4f}", dict(accs))
    return CheckResult("stronger_not_better", "pass", text, dict(accs))


def default_large_eps(geometry: Geometry, image_shape: tuple[int, ...]) -> float:
    """The geometry's erasing budget (L∞ 0.5, L2 0.5·√d: both reach the grey image from any
    image in [0, 1])."""
    return geometry.erasing_budget(image_shape)


def run_masking_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, geometry: Geometry,
                       eps: float, results: dict[str, dict[str, float]], *,
                       config: CheckConfig = CheckConfig(), batch_size: int = 500, seed: int = 0,
                       surrogate: nn.Module | None = None, progress: bool = False
                       ) -> list[CheckResult]:
    """Compute what the checks need (reusing ``results`` of :func:`evaluate`) and run them.

    Args:
        model: the target; x: (N, C, H, W); y: (N,); geometry, eps: as evaluated.
        results: the evaluation's results at ``eps`` (read, not modified).
        config: check settings. batch_size, seed, progress: as for :func:`evaluate`.
        surrogate: a second model for the transfer attack (black-box side), if any.

    Returns:
        One :class:`CheckResult` per check.
    """
    table = geometry_attacks(geometry.name)
    n, attack = len(x), parse_attack(config.attack, geometry)
    if AttackRole.WHITEBOX not in attack.roles:
        raise ValueError(f"checks need a white-box gradient attack "
                         f"({table.spellings(table.with_role(AttackRole.WHITEBOX))}), got "
                         f"{attack.name!r}")
    symbol = geometry.budget_symbol

    def acc(attacks: list[EvalAttack], at_eps: float) -> dict[str, float]:
        names = [a.name for a in attacks]
        gen = torch.Generator(device=x.device).manual_seed(seed)
        res = evaluate(model, x, y, names, geometry, at_eps, batch_size, gen, progress,
                       seed=seed, surrogate=surrogate)
        return {k: v["acc"] for k, v in res.items() if k in names}

    top = {k: v["acc"] for k, v in results.items() if k != "worst_case" and "." not in k}
    kinds = {k: parse_attack(k, geometry) for k in top}
    kinds[attack.name] = attack
    clean = next((v for k, v in top.items() if AttackRole.CLEAN in kinds[k].roles), None)
    if clean is None:
        if not table.with_role(AttackRole.CLEAN):
            raise ValueError(f"the masking checks need a clean attack (AttackRole.CLEAN) "
                             f"registered for threat={geometry.name}")
        clean_attack = table.with_role(AttackRole.CLEAN)[0].default()
        clean = acc([clean_attack], eps)[clean_attack.name]
    curve = [(0.0, clean)]
    for f in config.eps_factors:
        reuse = f == 1.0 and attack.name in top
        budget = geometry.scaled_budget(eps, f)
        curve.append((budget, top[attack.name] if reuse else acc([attack], budget)[attack.name]))
    large = config.large_eps or default_large_eps(geometry, tuple(x.shape[1:]))
    large_acc = acc([attack], large)[attack.name]
    curve.append((large, large_acc))
    checks = [check_eps_monotone(curve, n, config.z, symbol),
              check_large_eps(large_acc, large, config.large_eps_max_acc, symbol)]
    known = dict(curve).get(eps, top.get(attack.name))
    at_eps = {attack.name: known} if known is not None else acc([attack], eps)
    whitebox = {k: v for k, v in {**top, **at_eps}.items()
                if v is not None and AttackRole.WHITEBOX in kinds[k].roles}
    checks.append(_ensemble_check(top, whitebox, kinds, table, n, config.z))
    checks.append(_blackbox_check(top, whitebox, kinds, surrogate, attack, table, config, acc,
                                  eps, n))
    stronger = {k: v for k, v in whitebox.items() if kinds[k].strength() is not None}
    variant = attack.stronger()
    if len(stronger) < 2 and variant is not None:
        stronger = {attack.name: at_eps[attack.name], **acc([variant], eps)}
    checks.append(check_stronger_not_better(stronger, n, config.z))
    return checks


def _ensemble_check(top: dict[str, float], whitebox: dict[str, float],
                    kinds: dict[str, EvalAttack], table: GeometryAttacks, n: int, z: float
                    ) -> CheckResult:
    """The ensemble (AutoAttack; L0: Sparse-AutoAttack) against the PGD-like attacks."""
    pgd = {k: v for k, v in whitebox.items() if kinds[k].ensemble_reference}
    ensemble = {k: v for k, v in top.items() if AttackRole.ENSEMBLE in kinds[k].roles}
    if ensemble and pgd:
        name, aa = min(ensemble.items(), key=lambda kv: kv[1])
        ref = min(pgd, key=pgd.__getitem__)
        return check_autoattack_le_pgd(aa, ref, pgd[ref], n, z, name)
    references = [c for c in table.classes if c.ensemble_reference]
    wanted = table.ensemble.spelling if table.ensemble else "an ensemble attack"
    return CheckResult("autoattack_le_pgd", "skip", f"needs {wanted} and "
                       f"{' or '.join(c.spelling for c in references) or 'a pgd attack'} "
                       "in the list")


def _blackbox_check(top: dict[str, float], whitebox: dict[str, float],
                    kinds: dict[str, EvalAttack], surrogate: nn.Module | None,
                    attack: EvalAttack, table: GeometryAttacks, config: CheckConfig, acc: Any,
                    eps: float, n: int) -> CheckResult:
    """The best black-box attack (evaluated, else a transfer of ``attack`` when there is a
    surrogate and the geometry's query-based black-box attack) against the white-box ones."""
    blackbox = {k: v for k, v in top.items() if AttackRole.BLACKBOX in kinds[k].roles}
    wanted: list[EvalAttack] = []
    transfer = table.transfer_of(attack)
    if (surrogate is not None and transfer is not None
            and not any(kinds[k].needs_surrogate for k in blackbox)):
        wanted.append(transfer)
    query_attack = table.blackbox
    if (query_attack is not None and config.square_queries > 0
            and not any(type(kinds[k]) is query_attack for k in blackbox)):
        try:
            query_attack.check_available()
            wanted.append(query_attack.with_queries(config.square_queries))
        except ImportError as e:
            print(f"masking checks: {query_attack.__name__} skipped ({e})", file=sys.stderr)
    if wanted:
        blackbox.update(acc(wanted, eps))
    if not blackbox:
        hint = "give surrogate=<run id>"
        if query_attack is not None:
            hint += f", or square_queries > 0 with {query_attack.__name__} available"
        return CheckResult("blackbox_ge_whitebox", "skip", f"no black-box attack ({hint})")
    return check_blackbox_ge_whitebox(blackbox, whitebox, n, config.z)


def log_checks(tracker: Any, checks: list[CheckResult], step: int = 0) -> None:
    """``check/<name>`` metric (1 pass, 0 fail), ``check/<name>`` tag with the numbers."""
    tracker.log_metrics({f"check/{c.name}": float(c.status == "pass")
                         for c in checks if c.status != "skip"}, step=step)
    for c in checks:
        tracker.set_tag(f"check/{c.name}", f"{c.status.upper()}: {c.detail}"[:5000])
    tracker.log_dict({"checks": [vars(c) for c in checks]}, "eval/checks.json")


def report_checks(checks: list[CheckResult], stream: TextIO | None = None) -> None:
    """Print every check; failures loudly, as a banner on stderr."""
    for c in checks:
        print(f"check {c.name:<22s} {c.status.upper():<4s}  {c.detail}")
    failed = [c for c in checks if c.failed]
    if failed:
        out = stream or sys.stderr
        bar = "!" * 100
        print(bar, file=out)
        for c in failed:
            print(f"!!! GRADIENT-MASKING CHECK FAILED: {c.name}: {c.detail}", file=out)
        print("!!! The robustness numbers of this evaluation are suspect (obfuscated gradients?"
              " Athalye et al. 2018). Use stronger/adaptive attacks before reporting them.",
              file=out)
        print(bar, file=out)
