"""``python -m runners.evaluate``: evaluate a trained run's target with strong attacks.

Usage::

    python -m runners.evaluate run_id=<id> [attacks=[clean,pgd20,pgd50x10,cw50,autoattack]]
        [n_examples=1000] [batch_size=500] [seed=0] [checkpoint_dir=checkpoints]
        [surrogate=<run id>] [checks=true] [check_attack=pgd20] [square_queries=1000]
        [state_dir=<folder for AutoAttack's resumable state>] [device=auto] [progress=true]

The attacks are those of :mod:`runners.robustness` that apply to the run's threat geometry.
Each evaluation logs ``eval/<attack>_acc`` into the run, plus ``eval/worst_case_acc`` (a sample
counts as robust only if it survives every attack in the list),
``eval/autoattack.<attack>_acc`` (robust accuracy after each AutoAttack stage) and one table
artifact ``eval/table_<time>.json`` / ``.md``. ``checks=true`` adds the gradient-masking
checks of :mod:`runners.masking_checks` (``square_queries``: the queries of their black-box
attack, Square; Sparse-RS under ``threat=l0``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from runners.cli_args import parse_key_values
from runners.masking_checks import CheckConfig, log_checks, report_checks, run_masking_checks
from runners.robustness import DEFAULT_ATTACKS, evaluate, format_table, log_evaluation, \
    parse_attack
from runners.run_loading import load_run


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    args = parse_key_values(sys.argv[1:] if argv is None else argv, {
        "run_id": None, "attacks": list(DEFAULT_ATTACKS), "n_examples": 0, "batch_size": 500,
        "seed": 0, "checkpoint_dir": "checkpoints", "progress": True, "device": "auto",
        "surrogate": "", "checks": False, "state_dir": "", "check_attack": "pgd20",
        "square_queries": 1000})
    if not args["run_id"]:
        raise SystemExit("runners.evaluate: run_id=<mlflow run id> is required")
    attacks = list(args["attacks"])
    try:
        loaded = load_run(args["run_id"], args["checkpoint_dir"], args["device"])
        specs = [parse_attack(a, loaded.geometry) for a in attacks]
    except ValueError as e:
        raise SystemExit(f"runners.evaluate: {e}") from None
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
    results = evaluate(loaded.model, x, y, attacks, loaded.geometry, loaded.eps, bs, gen, progress,
                       seed=seed, surrogate=surrogate, state_dir=state_dir)
    config = CheckConfig(attack=args["check_attack"], square_queries=int(args["square_queries"]))
    checks = (run_masking_checks(loaded.model, x, y, loaded.geometry, loaded.eps, results,
                                 config=config, batch_size=bs, seed=seed, surrogate=surrogate,
                                 progress=progress) if args["checks"] else [])
    with loaded.tracker() as tracker:
        rows = log_evaluation(tracker, results, loaded.eps, attacks, loaded.epoch)
        if checks:
            log_checks(tracker, checks, loaded.epoch)
    print(format_table(rows))
    report_checks(checks)
    print(f"run_id={args['run_id']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
