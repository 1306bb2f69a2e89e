"""``python -m runners.evaluate``: evaluate a trained run's target with strong attacks.

Usage::

    python -m runners.evaluate run_id=<id> [attacks=[clean,pgd20,pgd50x10,cw50,autoattack]]
        [n_examples=1000] [batch_size=500] [seed=0] [checkpoint_dir=checkpoints]
        [surrogate=<run id>] [checks=true] [check_attack=pgd20] [square_queries=1000]
        [state_dir=<folder for AutoAttack's resumable state>] [device=auto] [progress=true]
        [tracking_uri=<uri>] [eps=[8/255,16/255]]

The attacks are those of :mod:`runners.robustness` that apply to the run's threat geometry.

Where the results go: each evaluation is a new MLflow run *nested* under the training run
(tags ``mlflow.parentRunId=<run id>``, ``kind=evaluation``, ``evaluated_run``,
``checkpoint_epoch``; params: the attack list, n_examples, seed, ...). It logs
``eval/<attack>_acc``, ``eval/worst_case_acc`` (a sample counts as robust only if it
survives every attack in the list), ``eval/autoattack.<attack>_acc`` (robust accuracy after
each AutoAttack stage), one table artifact ``eval/table_<time>.json`` / ``.md`` and, with
``checks=true``, the gradient-masking checks of :mod:`runners.masking_checks` (``square_queries``:
the queries of their black-box attack, Square; Sparse-RS under ``threat=l0``). The training run
is left as it is — its own final ``eval/*`` points, its status and end time — so nothing
duplicates or shadows the co-training's numbers; :mod:`runners.compare` reads the latest
evaluation of each run (per metric) over the training run's own.

``eps=[...]`` evaluates at several budgets (numbers or fractions such as ``8/255``; default:
the run's own). The run's own budget logs as above; another budget ``e`` logs
``eval/eps<e>/<attack>_acc`` and its table under ``eval/eps<e>/`` (``e`` to 4 significant
digits, e.g. ``eval/eps0.06275/pgd50x10_acc``). The masking checks run at the run's budget.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from learned_at.envs.options import setting
from learned_at.runners.cli import UsageError, exit_on_error, run_cli
from learned_at.runners.config_store import register_command
from learned_at.runners.masking_checks import (CheckConfig, log_checks, report_checks,
                                               run_masking_checks)
from learned_at.runners.robustness import (DEFAULT_ATTACKS, evaluate, format_table, log_evaluation,
                                           parse_attack)
from learned_at.runners.run_loading import load_run

__all__ = ["EVALUATION_KIND", "EvaluateArgs", "main"]

PROG = "runners.evaluate"
KIND_TAG = "kind"
EVALUATION_KIND = "evaluation"
"""``kind`` tag of an evaluation run (nested under the training run it evaluated)."""


@dataclass(frozen=True)
class EvaluateArgs:
    """Arguments of ``python -m runners.evaluate``."""

    run_id: str = setting("", "the co-training run whose final checkpoint is evaluated "
                          "(required)")
    attacks: list[str] = setting(doc="attack names (clean, fgsm, pgd<K>, pgd<K>x<R>, cw<K>, "
                                 "autoattack, square<Q>, transfer_<attack>; L0: spgd_p<K>, "
                                 "spgd_u<K>, sparse_rs<Q>, sparse_autoattack); those that do not "
                                 "apply to the run's threat are refused",
                                 factory=lambda: list(DEFAULT_ATTACKS))
    n_examples: int = setting(0, "the first n test samples (0 = the whole test set)")
    batch_size: int = setting(500, "examples per attack call")
    seed: int = setting(0, "seed of the attacks' random starts and of AutoAttack")
    checkpoint_dir: str = setting("checkpoints", "where co-training wrote its checkpoints (else "
                                  "the run's MLflow copy)")
    progress: bool = setting(True, "progress bars per attack")
    device: str = setting("auto", "auto, cpu or cuda")
    surrogate: str = setting("", "run id of the model that crafts transfer_* attacks")
    checks: bool = setting(False, "run the gradient-masking checks too")
    state_dir: str = setting("", "folder of AutoAttack's resumable state (default: "
                             "<checkpoint_dir>/<run_id>/eval)")
    check_attack: str = setting("pgd20", "the white-box attack the masking checks sweep")
    square_queries: int = setting(1000, "queries of the black-box check (0 skips it)")
    tracking_uri: str = setting("", "MLflow tracking URI; empty = MLflow's default "
                                "(MLFLOW_TRACKING_URI)")
    eps: list[str] = setting(doc="budgets to evaluate at (numbers or fractions such as 8/255); "
                             "empty = the run's", factory=list)


def parse_budget(text: str) -> float:
    """A budget written as a number or a fraction (``0.03``, ``8/255``)."""
    num, sep, den = str(text).partition("/")
    try:
        return float(num) / float(den) if sep else float(num)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"eps: expected a number or a fraction such as 8/255, got {text!r}"
                         ) from None


def budget_prefix(eps: float, run_eps: float) -> str:
    """Metric prefix of an evaluation at ``eps``: ``eval/`` at the run's own budget."""
    return "eval/" if math.isclose(eps, run_eps, rel_tol=1e-6) else f"eval/eps{eps:.4g}/"


def evaluate_run(args: EvaluateArgs) -> None:
    """Evaluate ``args.run_id`` (see the module docstring); prints the table and the ids."""
    if not args.run_id:
        raise UsageError("run_id=<mlflow run id> is required (see --help)")
    if args.batch_size < 1 or args.n_examples < 0:
        raise UsageError(f"batch_size={args.batch_size} / n_examples={args.n_examples}: "
                         "accepted batch_size >= 1, n_examples >= 0 (0 = all)")
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    _known_run(args.run_id, uri)
    loaded = load_run(args.run_id, args.checkpoint_dir, args.device, uri)
    try:
        specs = [parse_attack(a, loaded.geometry) for a in args.attacks]
        if args.checks:
            parse_attack(args.check_attack, loaded.geometry)
        budgets = [parse_budget(e) for e in args.eps] or [loaded.eps]
        for e in budgets:
            problem = loaded.geometry.check_budget(e, loaded.data.image_shape)
            if problem:
                raise ValueError(problem.replace("threat.eps", "eps"))
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.checks and not any(budget_prefix(e, loaded.eps) == "eval/" for e in budgets):
        raise UsageError(f"checks=true runs at the run's budget {loaded.eps:.4g}; add it to "
                         "eps=[...]")
    surrogate = None
    if args.surrogate:
        _known_run(args.surrogate, uri)
        other = load_run(args.surrogate, args.checkpoint_dir, args.device, uri)
        if (other.data.name, other.data.image_shape) != (loaded.data.name, loaded.data.image_shape):
            raise UsageError(f"surrogate run trained on {other.data.name} "
                             f"{other.data.image_shape}, target on {loaded.data.name} "
                             f"{loaded.data.image_shape}; pick a surrogate of the same data set")
        surrogate = other.model
    elif any(s.needs_surrogate for s in specs):
        raise UsageError("transfer_* attacks need surrogate=<run id>")
    x, y = loaded.test_tensors(args.n_examples)
    gen = torch.Generator(device=x.device).manual_seed(args.seed)
    state_dir = args.state_dir or str(Path(args.checkpoint_dir) / args.run_id / "eval")
    by_budget = {}
    for e in budgets:
        prefix = budget_prefix(e, loaded.eps)
        folder = state_dir if prefix == "eval/" else str(Path(state_dir) / f"eps{e:.4g}")
        by_budget[e] = evaluate(loaded.model, x, y, list(args.attacks), loaded.geometry, e,
                                args.batch_size, gen, args.progress, seed=args.seed,
                                surrogate=surrogate, state_dir=folder)
    own = next((r for e, r in by_budget.items() if budget_prefix(e, loaded.eps) == "eval/"), {})
    config = CheckConfig(attack=args.check_attack, square_queries=args.square_queries)
    checks = (run_masking_checks(loaded.model, x, y, loaded.geometry, loaded.eps, own,
                                 config=config, batch_size=args.batch_size, seed=args.seed,
                                 surrogate=surrogate, progress=args.progress)
              if args.checks else [])
    with loaded.evaluation_tracker(_run_name(args), {
            KIND_TAG: EVALUATION_KIND, "evaluated_run": args.run_id,
            "checkpoint_epoch": str(loaded.epoch)}) as tracker:
        tracker.log_params({"attacks": ",".join(args.attacks), "n_examples": len(x),
                            "seed": args.seed, "batch_size": args.batch_size,
                            "surrogate": args.surrogate or None, "checks": args.checks,
                            "checkpoint_epoch": loaded.epoch,
                            "eps": ",".join(f"{e:.6g}" for e in budgets)})
        rows = []
        for e, results in by_budget.items():
            rows += log_evaluation(tracker, results, e, list(args.attacks), loaded.epoch,
                                   budget_prefix(e, loaded.eps))
        if checks:
            log_checks(tracker, checks, loaded.epoch)
    print(format_table(rows))
    report_checks(checks)
    print(f"evaluation_run_id={tracker.run_id}")
    print(f"run_id={args.run_id}")


def _known_run(run_id: str, tracking_uri: str | None) -> None:
    """An unknown run id fails here with one line (before any checkpoint search)."""
    from mlflow import MlflowClient

    from learned_at.runners.run_store import get_run

    get_run(MlflowClient(tracking_uri), run_id)


def _run_name(args: EvaluateArgs) -> str:
    attacks = ",".join(args.attacks)
    return f"eval {attacks}" + (f" n={args.n_examples}" if args.n_examples else "")


def _job(cfg: DictConfig) -> None:
    args: EvaluateArgs = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    exit_on_error(PROG, lambda: evaluate_run(args),
                  tracking_uri=args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))


_task = hydra.main(config_path=None, config_name="evaluate", version_base="1.3")(_job)


def main() -> int:
    """Console-script entry point (``lat-evaluate``); returns the exit status."""
    register_command("evaluate", EvaluateArgs)
    return run_cli(PROG, _task, "evaluate")


if __name__ == "__main__":
    raise SystemExit(main())
