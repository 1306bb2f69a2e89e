"""Side-by-side ablation table of finished runs.

Usage::

    python -m runners.compare run_ids=[<id>,<id>,...]
    python -m runners.compare experiment=<name> [filter="tags.data = 'mnist'"]
        [pgd=auto|pgd50x10] [log=false] [tracking_uri=<uri>]

One row per run: policy, AT loss, clean, PGD, AutoAttack and worst-case accuracy (the latest
``eval/*`` metrics: those of the latest ``runners.evaluate`` run nested under the training run
that has them, else the co-training's own final evaluation), the gradient-masking checks
passed, mean time per epoch and total training time (the sum of the per-epoch
``time/epoch_s``, so evaluation and resumes do not count). The PGD column shows the attack
named by ``pgd=``; ``auto`` takes the strongest PGD (most steps × restarts) that the most runs
have. The markdown table goes to stdout and, only with ``log=true``, into a new MLflow run
tagged ``kind=comparison`` (artifacts ``compare/table.md`` and ``compare/rows.json``) in the
experiment of the first run; comparison and evaluation runs never appear as rows.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import asdict, dataclass, field

from mlflow import MlflowClient
from mlflow.entities import Run

__all__ = ["ComparisonRow", "collect_rows", "format_comparison", "main", "pick_pgd"]

_PGD_KEY = re.compile(r"^eval/pgd(\d+)(?:x(\d+))?_acc$")
COMPARISON_TAG = "kind"
COMPARISON_VALUE = "comparison"
EVALUATION_VALUE = "evaluation"  # runners.evaluate's nested runs (runners/evaluate.py)
PROG = "runners.compare"


@dataclass(frozen=True)
class CompareArgs:
    """Arguments of ``python -m runners.compare`` (give run_ids, experiment or filter).

    Attributes:
        run_ids: runs to compare, in this order.
        experiment: every run of this experiment (oldest first).
        filter: an MLflow filter string, e.g. "tags.data = 'mnist'" (with experiment= or alone).
        pgd: the PGD column's attack (pgd50x10, ...); auto = the strongest most runs have.
        log: also log the table as a new run tagged kind=comparison.
        tracking_uri: MLflow tracking URI; empty = MLflow's default.
    """

    run_ids: list[str] = field(default_factory=list)
    experiment: str = ""
    filter: str = ""
    pgd: str = "auto"
    log: bool = False
    tracking_uri: str = ""


def with_evaluations(client: MlflowClient, run: Run) -> Run:
    """``run`` with the ``eval/*`` and ``check/*`` metrics of its nested evaluation runs merged
    in (the latest evaluation that has a metric wins over older ones and the run's own)."""
    children = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and "
                      f"tags.{COMPARISON_TAG} = '{EVALUATION_VALUE}'",
        order_by=["attributes.start_time ASC"])
    for child in children:
        run.data.metrics.update({k: v for k, v in child.data.metrics.items()
                                 if k.startswith(("eval/", "check/"))})
    return run


@dataclass(frozen=True)
class ComparisonRow:
    """One run's line of the table (None: not measured).

    Attributes:
        run_id, run_name: the run.
        policy, at_loss: the method (run tags, else params).
        clean, pgd, autoattack, worst_case: accuracies.
        checks_passed, checks_total: gradient-masking checks (``check/*`` metrics).
        failed_checks: names of failed checks.
        epoch_s: mean seconds per training epoch; total_s: their sum; epochs: how many.
    """

    run_id: str
    run_name: str
    policy: str
    at_loss: str
    clean: float | None
    pgd: float | None
    autoattack: float | None
    worst_case: float | None
    checks_passed: int
    checks_total: int
    failed_checks: tuple[str, ...]
    epoch_s: float | None
    total_s: float | None
    epochs: int


def pick_pgd(runs: list[Run]) -> str | None:
    """The strongest PGD attack name that the most runs report (``pgd50x10``), or None."""
    count: dict[tuple[int, int], int] = {}
    for run in runs:
        for key in run.data.metrics:
            m = _PGD_KEY.match(key)
            if m:
                k = (int(m.group(1)), int(m.group(2) or 1))
                count[k] = count.get(k, 0) + 1
    if not count:
        return None
    steps, restarts = max(count, key=lambda k: (count[k], k[0] * k[1], k[1]))
    return f"pgd{steps}" if restarts == 1 else f"pgd{steps}x{restarts}"


def _epoch_times(client: MlflowClient, run_id: str) -> list[float]:
    """``time/epoch_s`` per epoch (the last value logged at each step, so resumes count once)."""
    by_step = {}
    for m in sorted(client.get_metric_history(run_id, "time/epoch_s"),
                    key=lambda m: m.timestamp):
        by_step[m.step] = m.value
    return [by_step[s] for s in sorted(by_step)]


def collect_rows(client: MlflowClient, runs: list[Run], pgd: str | None) -> list[ComparisonRow]:
    """Read the table's numbers from each run."""
    rows = []
    for run in runs:
        d = run.data
        checks = {k[len("check/"):]: v for k, v in d.metrics.items() if k.startswith("check/")}
        times = _epoch_times(client, run.info.run_id)
        rows.append(ComparisonRow(
            run_id=run.info.run_id, run_name=run.info.run_name or "",
            policy=d.tags.get("policy", d.params.get("policy.name", "?")),
            at_loss=d.tags.get("at_loss", d.params.get("at_loss.name", "?")),
            clean=d.metrics.get("eval/clean_acc"),
            pgd=d.metrics.get(f"eval/{pgd}_acc") if pgd else None,
            autoattack=d.metrics.get("eval/autoattack_acc"),
            worst_case=d.metrics.get("eval/worst_case_acc"),
            checks_passed=sum(v == 1.0 for v in checks.values()), checks_total=len(checks),
            failed_checks=tuple(sorted(k for k, v in checks.items() if v != 1.0)),
            epoch_s=sum(times) / len(times) if times else None,
            total_s=sum(times) if times else None, epochs=len(times)))
    return rows


def _acc(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


def _sec(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _checks(r: ComparisonRow) -> str:
    if r.checks_total == 0:
        return "–"
    text = f"{r.checks_passed}/{r.checks_total}"
    return text if not r.failed_checks else f"{text} FAIL: {', '.join(r.failed_checks)}"


def format_comparison(rows: list[ComparisonRow], pgd: str | None) -> str:
    """Markdown table; accuracies in percent, times in seconds."""
    head = ["run", "policy", "AT loss", "clean %", f"PGD ({pgd or '–'}) %", "AutoAttack %",
            "worst case %", "masking checks", "s / epoch", "train s (epochs)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * 4 + "---|---:|---:|"]
    for r in rows:
        cells = [f"{r.run_name} ({r.run_id[:8]})", r.policy, r.at_loss, _acc(r.clean),
                 _acc(r.pgd), _acc(r.autoattack), _acc(r.worst_case), _checks(r),
                 _sec(r.epoch_s), f"{_sec(r.total_s)} ({r.epochs})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def find_runs(client: MlflowClient, run_ids: list[str], experiment: str,
              filter_string: str) -> list[Run]:
    """Runs by id (in the given order), or by experiment name and/or MLflow filter string."""
    from runners.cli_args import UsageError
    from runners.tracking import get_run

    if run_ids:
        return [get_run(client, r) for r in run_ids]
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise UsageError(f"no experiment named {experiment!r}")
        ids = [exp.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    try:
        runs = client.search_runs(ids, filter_string=filter_string, max_results=5000,
                                  order_by=["attributes.start_time ASC"])
    except Exception as error:  # a malformed filter string
        first = str(getattr(error, "message", error)).strip().splitlines()[0]
        raise UsageError(f"filter={filter_string!r}: {first}") from None
    return [r for r in runs
            if r.data.tags.get(COMPARISON_TAG) not in (COMPARISON_VALUE, EVALUATION_VALUE)]


def help_text() -> str:
    from runners.cli_args import format_help

    return format_help(
        "python -m runners.compare run_ids=[a,b] | experiment=<name> | filter=<mlflow filter> "
        "[key=value ...]   (console script: lat-compare)",
        "Print a markdown table comparing finished runs: method, clean / PGD / AutoAttack / "
        "worst-case accuracy (the latest runners.evaluate results), gradient-masking checks "
        "and training time.", CompareArgs(),
        "python -m runners.compare experiment=learned-at filter=\"tags.data = 'mnist'\"")


def _main(argv: list[str]) -> int:
    from runners.cli_args import UsageError, parse_args, wants_help
    from runners.tracking import Tracker

    if wants_help(argv):
        print(help_text())
        return 0
    args = parse_args(CompareArgs, argv)
    if not (args.run_ids or args.experiment or args.filter):
        raise UsageError("give run_ids=[...], experiment=<name> or filter=<mlflow filter "
                         "string> (see --help)")
    uri = args.tracking_uri or None
    client = MlflowClient(tracking_uri=uri)
    runs = find_runs(client, list(args.run_ids), args.experiment, args.filter)
    if not runs:
        raise UsageError("no runs match")
    runs = [with_evaluations(client, run) for run in runs]
    pgd = pick_pgd(runs) if args.pgd == "auto" else args.pgd
    rows = collect_rows(client, runs, pgd)
    table = format_comparison(rows, pgd)
    print(table)
    if args.log:
        exp_name = client.get_experiment(runs[0].info.experiment_id).name
        with Tracker(exp_name, run_name="comparison", tracking_uri=uri,
                     tags={COMPARISON_TAG: COMPARISON_VALUE}) as tracker:
            tracker.log_text(table + "\n", "compare/table.md")
            tracker.log_dict({"pgd": pgd, "rows": [asdict(r) for r in rows]},
                             "compare/rows.json")
            tracker.set_tag("compare.run_ids", ",".join(r.run_id for r in rows)[:5000])
        print(f"comparison_run_id={tracker.run_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    from runners.cli_args import run_cli

    return run_cli(PROG, lambda: _main(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
