"""Robustness evaluation: clean, FGSM, PGD-k with restarts, CW, AutoAttack, Square, transfer.

The library behind ``python -m runners.evaluate`` (the CLI, :mod:`runners.evaluate`) and the
co-training's per-epoch monitoring. Attack names: ``clean``, ``fgsm``, ``pgd<K>``, ``pgd<K>x<R>`` (R restarts), ``cw<K>``,
``cw<K>x<R>``, ``autoattack`` (the original standard AutoAttack, :mod:`runners.autoattack_eval`),
``square`` / ``square<Q>`` (Square Attack alone with Q queries, a black-box attack) and
``transfer_<fgsm|pgd..|cw..>`` (crafted on the ``surrogate=`` run, evaluated on this one). PGD
and CW use α = 1/4 of the geometry's step scale (ε/4 for L∞/L2; for L0 ``pgd<K>`` is K steps
of the geometry's own sPGD ascent, α = 0.25) and a random start; a restart attacks only the points no earlier restart
broke, so ``pgd50x10`` is the strong evaluation PGD (the per-epoch monitor of
``runners.cotrain`` is a single PGD-10). Which families apply depends on the threat geometry
(:attr:`envs.geometry.base.Geometry.eval_attacks`); :func:`parse_attack` refuses the others.
The sparse (L0) attacks (:mod:`envs.attacks`): ``spgd_p`` / ``spgd_p<K>`` and ``spgd_u`` /
``spgd_u<K>`` (evaluation sPGD with the projected / unprojected gradient, K = 300 by default),
``sparse_rs`` / ``sparse_rs<Q>`` (the black-box Sparse-RS, Q = 10 000 queries by default) and
``sparse_autoattack`` / ``sparse_autoattack<K>x<Q>`` (Sparse-AutoAttack: sPGD-p → sPGD-u →
Sparse-RS on the survivors, K sPGD steps per stage, Q queries; its stages are logged as
``eval/sparse_autoattack.<stage>_acc``).
:func:`log_evaluation` logs ``eval/<attack>_acc``, ``eval/worst_case_acc`` (a sample counts as
robust only if it survives every attack in the list), ``eval/autoattack.<attack>_acc`` (robust
accuracy after each AutoAttack stage) and one table artifact ``eval/table_<time>.json``/``.md``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.attacks.saa import (DEFAULT_RS_QUERIES, SAA_STAGES, check_sparse,
                                         sparse_autoattack, sparse_rs_attack)
from learned_at.envs.attacks.spgd import spgd_attack
from learned_at.envs.geometry.base import Geometry
from learned_at.envs.pgd import fgsm_attack, pgd_attack

_PATTERN = re.compile(r"^(transfer_)?(clean|fgsm|pgd|cw|square|autoattack|spgd_p|spgd_u|sparse_rs"
                      r"|sparse_autoattack)(\d+)?(?:x(\d+))?$")
_VALID = ("clean, fgsm, pgd<K>, pgd<K>x<R>, cw<K>, cw<K>x<R>, autoattack, square, square<Q>, "
          "transfer_<fgsm|pgd..|cw..> (e.g. pgd20, pgd50x10, cw30, transfer_pgd20); L0: "
          "spgd_p[<K>], spgd_u[<K>], sparse_rs[<Q>], sparse_autoattack[<K>x<Q>]")
GRADIENT_KINDS = ("fgsm", "pgd", "cw")
"""White-box attacks run by our own PGD code."""
SPARSE_GRADIENT_KINDS = ("spgd_p", "spgd_u")
"""White-box evaluation sPGD (L0)."""
WHITEBOX_KINDS = GRADIENT_KINDS + SPARSE_GRADIENT_KINDS
"""Every white-box gradient attack (the masking checks' white-box side)."""
BLACKBOX_KINDS = ("square", "sparse_rs")
"""Score-based black-box attacks (the masking checks' black-box side, with transfers)."""
_DEFAULT_STEPS = {"clean": 0, "fgsm": 1, "autoattack": 0, "square": 5000, "spgd_p": 300,
                  "spgd_u": 300, "sparse_rs": 10_000, "sparse_autoattack": 300}


@dataclass(frozen=True)
class AttackSpec:
    """A named evaluation attack.

    Attributes:
        name: as written by the user (``pgd50x10``).
        kind: ``clean``, ``fgsm``, ``pgd``, ``cw``, ``autoattack`` or ``square``.
        steps: iterations (0 for clean and autoattack, 1 for fgsm, queries for square and
            sparse_rs, sPGD steps per stage for sparse_autoattack).
        restarts: random restarts.
        transfer: crafted on a surrogate model, evaluated on the target (black-box).
        queries: Sparse-RS queries of sparse_autoattack (0 for every other kind).
    """

    name: str
    kind: str
    steps: int = 0
    restarts: int = 1
    transfer: bool = False
    queries: int = 0


def parse_attack(name: str, geometry: Geometry | None = None) -> AttackSpec:
    """Parse an attack name; unknown names, and attacks that do not apply to ``geometry``
    (when given), raise a ValueError that lists the valid ones."""
    m = _PATTERN.match(name.strip())
    if not m:
        raise ValueError(f"unknown attack {name!r}; valid: {_VALID}")
    transfer, kind, steps, restarts = bool(m.group(1)), m.group(2), m.group(3), m.group(4)
    bad = ((kind in ("pgd", "cw") and not steps)
           or (kind in ("clean", "fgsm", "autoattack") and (steps or restarts))
           or (kind in ("square", "sparse_rs", *SPARSE_GRADIENT_KINDS) and restarts)
           or (transfer and kind not in GRADIENT_KINDS))
    if bad:
        raise ValueError(f"unknown attack {name!r}; valid: {_VALID}")
    if geometry is not None and kind not in geometry.eval_attacks:
        raise ValueError(f"attack {name!r} does not apply to threat={geometry.name}; its attacks: "
                         f"{', '.join(geometry.eval_attacks)}")
    if kind == "sparse_autoattack":
        return AttackSpec(name.strip(), kind, int(steps or _DEFAULT_STEPS[kind]), 1, False,
                          int(restarts or DEFAULT_RS_QUERIES))
    return AttackSpec(name.strip(), kind, int(steps or _DEFAULT_STEPS.get(kind, 0)),
                      int(restarts or 1), transfer)


def attack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
                 geometry: Geometry, eps: float, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Adversarial examples of one batch for ``spec``. (N, C, H, W) -> (N, C, H, W)."""
    if spec.kind == "clean":
        return x
    if spec.kind in SPARSE_GRADIENT_KINDS or spec.kind == "sparse_rs":
        return _sparse_batch(model, x, y, spec, geometry, eps, generator)
    if spec.kind not in GRADIENT_KINDS:
        raise ValueError(f"attack_batch runs fgsm/pgd/cw/spgd/sparse_rs only, not "
                         f"{spec.name!r}; use evaluate()")
    if spec.kind == "fgsm":
        return fgsm_attack(model, x, y, geometry=geometry, eps=eps)
    loss = AttackLoss.CE if spec.kind == "pgd" else AttackLoss.MARGIN
    return pgd_attack(model, x, y, geometry=geometry, eps=eps, alpha=geometry.step_size(eps, 0.25),
                      steps=spec.steps, restarts=spec.restarts, loss=loss, generator=generator)


def _sparse_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
                  geometry: Geometry, eps: float, generator: torch.Generator | None
                  ) -> torch.Tensor:
    """Evaluation sPGD or Sparse-RS on one batch, checked against the L0 budget."""
    if spec.kind == "sparse_rs":
        x_adv = sparse_rs_attack(model, x, y, eps, queries=spec.steps, generator=generator)
    else:
        gradient = "projected" if spec.kind == "spgd_p" else "unprojected"
        x_adv = spgd_attack(model, x, y, geometry=geometry, k=eps, steps=spec.steps,
                            gradient=gradient, generator=generator)
    check_sparse(x, x_adv, eps, spec.name)
    return x_adv


def _sparse_autoattack_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                            spec: AttackSpec, geometry: Geometry, eps: float, batch_size: int,
                            generator: torch.Generator | None, progress: bool
                            ) -> tuple[torch.Tensor, dict[str, dict[str, float]]]:
    """(N,) robustness mask of Sparse-AutoAttack and the accuracy after each of its stages."""
    robust, stages = [], {s: [] for s in SAA_STAGES}
    seconds = dict.fromkeys(SAA_STAGES, 0.0)
    for i in tqdm(range(0, len(x), batch_size), desc=f"eval {spec.name}", leave=False,
                  disable=not progress):
        res = sparse_autoattack(model, x[i:i + batch_size], y[i:i + batch_size], eps,
                                geometry=geometry, steps=spec.steps, queries=spec.queries,
                                generator=generator)
        robust.append(res.robust)
        for s in SAA_STAGES:
            stages[s].append(res.stages[s])
            seconds[s] += res.seconds[s]
    return torch.cat(robust), {s: {"acc": torch.cat(v).float().mean().item(),
                                   "time_s": seconds[s]} for s, v in stages.items()}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Eval-mode predictions (N,) int64 for a tensor of images (N, C, H, W)."""
    was = model.training
    model.eval()
    preds = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    model.train(was)
    return preds


def correct_under_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
                         geometry: Geometry, eps: float, batch_size: int,
                         generator: torch.Generator | None = None, progress: bool = False
                         ) -> torch.Tensor:
    """Per-example robustness mask (N,) bool: still classified correctly after the attack."""
    out = []
    it = range(0, len(x), batch_size)
    for i in tqdm(it, desc=f"eval {spec.name}", leave=False, disable=not progress):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        x_adv = attack_batch(model, xb, yb, spec, geometry, eps, generator)
        out.append(predict(model, x_adv, batch_size) == yb)
    return torch.cat(out)


def worst_case(masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-example worst case: robust only if robust under every attack. {name: (N,) bool} -> (N,).

    An empty mapping is an error (there is no worst case over no attack).
    """
    if not masks:
        raise ValueError("worst_case needs at least one attack's robustness mask")
    out = None
    for mask in masks.values():
        out = mask.clone() if out is None else out & mask
    return out


def _mask_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
             geometry: Geometry, eps: float, batch_size: int,
             generator: torch.Generator | None, progress: bool, seed: int,
             surrogate: nn.Module | None, state_dir: str | Path | None,
             make_adversary: Callable[..., Any] | None
             ) -> tuple[torch.Tensor, dict[str, dict[str, float]]]:
    """(N,) robustness mask of one attack, plus per-stage results (AutoAttack only)."""
    if spec.transfer:
        if surrogate is None:
            raise ValueError(f"attack {spec.name!r} needs a surrogate model (surrogate=<run id>)")
        base = AttackSpec(spec.name, spec.kind, spec.steps, spec.restarts)
        out = []
        for i in tqdm(range(0, len(x), batch_size), desc=f"eval {spec.name}", leave=False,
                      disable=not progress):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            x_adv = attack_batch(surrogate, xb, yb, base, geometry, eps, generator)
            out.append(predict(model, x_adv, batch_size) == yb)
        return torch.cat(out), {}
    if spec.kind == "sparse_autoattack":
        return _sparse_autoattack_mask(model, x, y, spec, geometry, eps, batch_size, generator,
                                       progress)
    if spec.kind in ("autoattack", "square"):
        from learned_at.runners.autoattack_eval import make_autoattack, make_square, run_autoattack

        if spec.kind == "autoattack":
            factory = make_adversary or make_autoattack
        else:
            def factory(m, t, e, s, d):
                return make_square(m, t, e, s, d, queries=spec.steps)
        path = None if state_dir is None else Path(state_dir) / f"{spec.name}_state.json"
        res = run_autoattack(model, x, y, geometry, eps, batch_size=batch_size, seed=seed,
                             state_path=path, progress=progress, make_adversary=factory)
        stages = res.stages if spec.kind == "autoattack" else {}
        return res.robust, stages
    return correct_under_attack(model, x, y, spec, geometry, eps, batch_size, generator,
                                progress), {}


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
        generator: random starts of PGD/CW.
        progress: progress bars (attack name and examples done).
        seed: seed of AutoAttack / Square.
        surrogate: the model that crafts ``transfer_*`` attacks.
        state_dir: folder for AutoAttack's resumable state (None: not resumable).
        make_adversary: AutoAttack factory override (tests only; reported numbers use the
            standard version).
        masks: if given, filled with each attack's (N,) robustness mask.

    Returns:
        {attack name: {"acc": float, "time_s": float, "n": int}, ..., "worst_case": {...}};
        AutoAttack adds ``"autoattack.<stage>"`` entries (accuracy after each of its attacks).
    """
    specs = [parse_attack(a, geometry) for a in attacks]  # fail on a bad name before any work
    results: dict[str, dict[str, float]] = {}
    per_attack: dict[str, torch.Tensor] = {}
    stages_all: dict[str, dict[str, float]] = {}
    for spec in specs:
        t0 = time.perf_counter()
        mask, stages = _mask_of(model, x, y, spec, geometry, eps, batch_size, generator, progress,
                                seed, surrogate, state_dir, make_adversary)
        per_attack[spec.name] = mask
        results[spec.name] = {"acc": mask.float().mean().item(),
                              "time_s": time.perf_counter() - t0, "n": len(x)}
        stages_all.update({f"{spec.name}.{k}": {**v, "n": len(x)} for k, v in stages.items()})
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
    rows = [{"attack": k, "eps": eps, "n": v["n"], "acc": v["acc"], "time_s": v["time_s"]}
            for k, v in results.items()]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tracker.log_dict({"rows": rows, "attacks": attacks}, f"{prefix}table_{stamp}.json")
    tracker.log_text(format_table(rows) + "\n", f"{prefix}table_{stamp}.md")
    if "autoattack" in results:
        from learned_at.runners.autoattack_eval import AUTOATTACK_VERSION

        tracker.set_tag("eval/autoattack_version", f"pyautoattack {AUTOATTACK_VERSION}")
    return rows
