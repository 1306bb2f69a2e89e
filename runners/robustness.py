"""Robustness evaluation: the per-example worst case over a list of named attacks.

The library behind ``python -m runners.evaluate`` (the CLI, :mod:`runners.evaluate`) and the
co-training's per-epoch monitoring. Each attack is an object of :mod:`envs.attacks` built from
its name by the registry of the run's threat geometry (:func:`parse_attack`); this module only
runs them and collects their masks, so adding an attack is one class plus one registration
(:func:`envs.attacks.registry.register_eval_attack`), with no change here. The built-in names
(:mod:`envs.attacks.catalog`):

* every geometry: ``clean``, ``fgsm``, ``pgd<K>[x<R>]`` (K steps, R restarts; a restart attacks
  only the points no earlier restart broke, so ``pgd50x10`` is the strong evaluation PGD; the
  per-epoch monitor of ``runners.cotrain`` is a single PGD-10), ``transfer_<fgsm|pgd..|cw..>``
  (crafted on the ``surrogate=`` model, evaluated on this one); PGD and CW use α = 1/4 of the
  geometry's step scale (ε/4 for L∞/L2; for L0 ``pgd<K>`` is K steps of the geometry's own
  sPGD ascent, α = 0.25) and a random start;
* L∞ and L2: ``cw<K>[x<R>]``, ``autoattack`` (the original standard AutoAttack,
  :mod:`envs.attacks.autoattack`), ``square[<Q>]`` (Square Attack alone with Q queries, a
  black-box attack);
* L0 (:mod:`envs.attacks.sparse`): ``spgd_p[<K>]`` and ``spgd_u[<K>]`` (evaluation sPGD with
  the projected / unprojected gradient, K = 300 by default), ``sparse_rs[<Q>]`` (the black-box
  Sparse-RS, Q = 10 000 queries by default) and ``sparse_autoattack[<K>x<Q>]``
  (Sparse-AutoAttack: sPGD-p → sPGD-u → Sparse-RS on the survivors, K sPGD steps per stage, Q
  queries; its stages are logged as ``eval/sparse_autoattack.<stage>_acc``).

Names that do not apply to the geometry are refused with the list of its spellings.
:func:`log_evaluation` logs ``eval/<attack>_acc``, ``eval/worst_case_acc`` (a sample counts as
robust only if it survives every attack in the list), ``eval/autoattack.<attack>_acc`` (robust
accuracy after each AutoAttack stage) and one table artifact ``eval/table_<time>.json``/``.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learned_at.envs.attacks.base import AttackContext, EvalAttack, predict
from learned_at.envs.attacks.registry import parse_eval_attack
from learned_at.envs.geometry.base import Geometry

__all__ = ["DEFAULT_ATTACKS", "evaluate", "format_table", "log_evaluation", "parse_attack",
           "predict", "worst_case"]


def parse_attack(name: str, geometry: Geometry | None = None) -> EvalAttack:
    """The attack object ``name`` spells (:mod:`envs.attacks`); unknown names, and attacks that
    do not apply to ``geometry`` (when given), raise a ValueError that lists the valid
    spellings."""
    return parse_eval_attack(name, None if geometry is None else geometry.name)


def worst_case(masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-example worst case: robust only if robust under every attack. {name: (N,) bool} -> (N,).

    An empty mapping is an error (there is no worst case over no attack).
    """
    if not masks:
        raise ValueError("worst_case needs at least one attack's robustness mask")
    out: torch.Tensor | None = None
    for mask in masks.values():
        out = mask.clone() if out is None else out & mask
    assert out is not None  # masks is not empty
    return out


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: list[str],
             geometry: Geometry, eps: float, batch_size: int = 500,
             generator: torch.Generator | None = None, progress: bool = False, *,
             seed: int = 0, surrogate: nn.Module | None = None,
             state_dir: str | Path | None = None,
             make_adversary: Callable[..., Any] | None = None,
             masks: dict[str, torch.Tensor] | None = None) -> dict[str, dict[str, float]]:
    """Accuracy under each attack plus the per-example worst case over the list.

    Args:
        model: the target, (N, C, H, W) in [0, 1] -> logits (N, K).
        x: (N, C, H, W) on the model's device; y: (N,) int64.
        attacks: attack names (see :func:`parse_attack`).
        geometry, eps: the threat geometry and budget.
        batch_size: examples per attack call.
        generator: random starts of PGD/CW (and sPGD, Sparse-RS).
        progress: progress bars (attack name and examples done).
        seed: seed of AutoAttack / Square.
        surrogate: the model that crafts ``transfer_*`` attacks.
        state_dir: folder for AutoAttack's resumable state (None: not resumable).
        make_adversary: AutoAttack factory override (tests only; reported numbers use the
            standard version).
        masks: if given, filled with each attack's (N,) robustness mask.

    Returns:
        {attack name: {"acc": float, "time_s": float, "n": int}, ..., "worst_case": {...}};
        multi-stage attacks add ``"<attack>.<stage>"`` entries (accuracy after each stage:
        ``autoattack.<stage>``, ``sparse_autoattack.<stage>``).
    """
    parsed = [parse_attack(a, geometry) for a in attacks]  # fail on a bad name before any work
    context = AttackContext(batch_size, generator, seed, progress, surrogate,
                            None if state_dir is None else Path(state_dir), make_adversary)
    results: dict[str, dict[str, float]] = {}
    per_attack: dict[str, torch.Tensor] = {}
    stages_all: dict[str, dict[str, float]] = {}
    for attack in parsed:
        t0 = time.perf_counter()
        outcome = attack.robust_mask(model, x, y, geometry, eps, context)
        per_attack[attack.name] = outcome.robust
        results[attack.name] = {"acc": outcome.robust.float().mean().item(),
                                "time_s": time.perf_counter() - t0, "n": len(x)}
        stages_all.update({f"{attack.name}.{k}": {**v, "n": len(x)}
                           for k, v in outcome.stages.items()})
    results["worst_case"] = {"acc": worst_case(per_attack).float().mean().item(), "time_s": 0.0,
                             "n": len(x)}
    results.update(stages_all)
    if masks is not None:
        masks.update(per_attack)
    return results


DEFAULT_ATTACKS = ("clean", "pgd20", "pgd50x10", "cw50", "autoattack")

def format_table(rows: list[dict[str, float | str]]) -> str:
    """Markdown table of evaluation rows (attack, ε, n, accuracy, time)."""
    lines = ["| attack | eps | n | accuracy | time (s) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['attack']} | {float(r['eps']):.4g} | {int(r['n'])} | {float(r['acc']):.4f} "
              f"| {float(r['time_s']):.1f} |" for r in rows]
    return "\n".join(lines)


def log_evaluation(tracker: Any, results: dict[str, dict[str, float]], eps: float,
                   attacks: list[str], step: int = 0, prefix: str = "eval/"
                   ) -> list[dict[str, float | str]]:
    """``<prefix><attack>_acc`` metrics and one table artifact (JSON + markdown) per evaluation.

    ``step`` is the checkpoint's epoch. ``runners.evaluate`` logs into a run of its own, nested
    under the training run, so these points never share a run and a step with the
    co-training's final ``eval/*`` values. ``prefix`` keeps evaluations at other budgets apart
    (``eval/eps0.06275/``); the table goes under it too.
    """
    tracker.log_metrics({f"{prefix}{k}_acc": v["acc"] for k, v in results.items()}, step=step)
    rows: list[dict[str, float | str]] = [
        {"attack": k, "eps": eps, "n": v["n"], "acc": v["acc"], "time_s": v["time_s"]}
        for k, v in results.items()]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tracker.log_dict({"rows": rows, "attacks": attacks}, f"{prefix}table_{stamp}.json")
    tracker.log_text(format_table(rows) + "\n", f"{prefix}table_{stamp}.md")
    for name in attacks:  # e.g. the AutoAttack version, when it ran
        attack = parse_attack(name)
        if attack.name in results:
            for key, value in attack.tags().items():
                tracker.set_tag(f"eval/{key}", value)
    return rows
