"""``python -m runners.evaluate``: evaluate a trained run's target with strong attacks.

Usage::

    python -m runners.evaluate run_id=<id> [attacks=[clean,pgd20,pgd50x10,cw50,autoattack]]
        [n_examples=1000] [batch_size=500] [seed=0] [checkpoint_dir=checkpoints]
        [surrogate=<run id>] [checks=true] [check_attack=pgd20] [square_queries=1000]
        [state_dir=<folder for AutoAttack's resumable state>] [device=auto] [progress=true]
        [eps=[8/255,16/255]]

The attacks are those of :mod:`runners.robustness` that apply to the run's threat geometry.
Each evaluation logs ``eval/<attack>_acc`` into the run, plus ``eval/worst_case_acc`` (a sample
counts as robust only if it survives every attack in the list),
``eval/autoattack.<attack>_acc`` (robust accuracy after each AutoAttack stage) and one table
artifact ``eval/table_<time>.json`` / ``.md``. ``checks=true`` adds the gradient-masking
checks of :mod:`runners.masking_checks`.

``eps=[...]`` evaluates at several budgets (numbers or fractions such as ``8/255``; default:
the run's own). The run's own budget logs as above; another budget ``e`` logs
``eval/eps<e>/<attack>_acc`` and its table under ``eval/eps<e>/`` (``e`` to 4 significant
digits, e.g. ``eval/eps0.06275/pgd50x10_acc``). The masking checks run at the run's budget.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from runners.cli_args import parse_key_values
from runners.masking_checks import CheckConfig, log_checks, report_checks, run_masking_checks
from runners.robustness import DEFAULT_ATTACKS, evaluate, format_table, log_evaluation, \
    parse_attack
from runners.run_loading import load_run


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


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    args = parse_key_values(sys.argv[1:] if argv is None else argv, {
        "run_id": None, "attacks": list(DEFAULT_ATTACKS), "n_examples": 0, "batch_size": 500,
        "seed": 0, "checkpoint_dir": "checkpoints", "progress": True, "device": "auto",
        "surrogate": "", "checks": False, "state_dir": "", "check_attack": "pgd20",
        "square_queries": 1000, "eps": []})
    if not args["run_id"]:
        raise SystemExit("runners.evaluate: run_id=<mlflow run id> is required")
    attacks = list(args["attacks"])
    try:
        loaded = load_run(args["run_id"], args["checkpoint_dir"], args["device"])
        specs = [parse_attack(a, loaded.geometry) for a in attacks]
        budgets = [parse_budget(e) for e in args["eps"]] or [loaded.eps]
        for e in budgets:
            problem = loaded.geometry.check_budget(e, loaded.data.image_shape)
            if problem:
                raise ValueError(problem.replace("threat.eps", "eps"))
    except ValueError as e:
        raise SystemExit(f"runners.evaluate: {e}") from None
    if args["checks"] and not any(budget_prefix(e, loaded.eps) == "eval/" for e in budgets):
        raise SystemExit(f"runners.evaluate: checks=true runs at the run's budget "
                         f"{loaded.eps:.4g}; add it to eps=[...]")
    surrogate = None
    if args["surrogate"]:
        other = load_run(args["surrogate"], args["checkpoint_dir"], args["device"])
        if (other.data.name, other.data.image_shape) != (loaded.data.name, loaded.data.image_shape):
            raise SystemExit(f"runners.evaluate: surrogate run trained on {other.data.name} "
                             f"{other.data.image_shape}, target on {loaded.data.name} "
                             f"{loaded.data.image_shape}; pick a surrogate of the same data set")
        surrogate = other.model
    elif any(s.transfer for s in specs):
        raise SystemExit("runners.evaluate: transfer_* attacks need surrogate=<run id>")
    x, y = loaded.test_tensors(int(args["n_examples"]))
    seed, bs, progress = int(args["seed"]), int(args["batch_size"]), bool(args["progress"])
    gen = torch.Generator(device=x.device).manual_seed(seed)
    state_dir = args["state_dir"] or str(Path(args["checkpoint_dir"]) / args["run_id"] / "eval")
    by_budget = {}
    for e in budgets:
        prefix = budget_prefix(e, loaded.eps)
        folder = state_dir if prefix == "eval/" else str(Path(state_dir) / f"eps{e:.4g}")
        by_budget[e] = evaluate(loaded.model, x, y, attacks, loaded.geometry, e, bs, gen,
                                progress, seed=seed, surrogate=surrogate, state_dir=folder)
    own = next((r for e, r in by_budget.items() if budget_prefix(e, loaded.eps) == "eval/"), {})
    config = CheckConfig(attack=args["check_attack"], square_queries=int(args["square_queries"]))
    checks = (run_masking_checks(loaded.model, x, y, loaded.geometry, loaded.eps, own,
                                 config=config, batch_size=bs, seed=seed, surrogate=surrogate,
                                 progress=progress) if args["checks"] else [])
    rows = []
    with loaded.tracker() as tracker:
        for e, results in by_budget.items():
            rows += log_evaluation(tracker, results, e, attacks, loaded.epoch,
                                   budget_prefix(e, loaded.eps))
        if checks:
            log_checks(tracker, checks, loaded.epoch)
    print(format_table(rows))
    report_checks(checks)
    print(f"run_id={args['run_id']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
