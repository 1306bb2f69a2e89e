"""Side-by-side ablation table of finished runs, with seeds aggregated and paired comparisons.

Usage::

    python -m runners.compare run_ids=[<id>,<id>,...]
    python -m runners.compare experiment=<name> [filter="tags.data = 'mnist'"]
        [pgd=auto|pgd50x10] [group_by=[policy.name]] [paired=[las_at,pgd_at]]
        [log=false] [tracking_uri=<uri>]

One row per run: policy, AT loss, seed, clean, PGD, AutoAttack and worst-case accuracy (the
latest ``eval/*`` metrics: those of the latest ``runners.evaluate`` run nested under the
training run that has them, else the co-training's own final evaluation), the
gradient-masking checks passed, mean time per epoch and total training time (the sum of the
per-epoch ``time/epoch_s``, so evaluation and resumes do not count). The PGD column shows the
attack named by ``pgd=``; ``auto`` takes the strongest PGD (most steps × restarts) that the
most runs have.

Seeds (:mod:`runners.aggregate`): runs whose configuration differs only in the seed form a group,
and when a group has several runs (or ``group_by=`` names the fields that define groups) a
second table gives each group's mean ± std (sample std, n runs) per column. ``paired=[A,B]``
compares two groups over the seeds both have: per column the mean of the per-seed differences
A − B ± their std, with the half-width of the 95 % t-interval (groups are named by their label
or by a value that defines them, e.g. ``las_at``).

The tables go to stdout and, only with ``log=true``, into a new MLflow run tagged
``kind=comparison`` (artifacts ``compare/table.md`` and ``compare/rows.json``) in the
experiment of the first run; comparison and evaluation runs never appear as rows.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass

import hydra
from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from learned_at.envs.options import setting
from learned_at.runners.cli import UsageError, exit_on_error, run_cli
from learned_at.runners.config_store import register_command
from learned_at.runners.aggregate import (Group, column_stat, find_group, fmt_difference, fmt_stat,
                                          group_runs, paired_difference, per_seed, setting_of)

__all__ = ["ComparisonRow", "collect_rows", "format_comparison", "format_groups",
           "format_paired", "group_rows", "main", "pick_pgd"]

_PGD_KEY = re.compile(r"^eval/pgd(\d+)(?:x(\d+))?_acc$")
COMPARISON_TAG = "kind"
COMPARISON_VALUE = "comparison"
EVALUATION_VALUE = "evaluation"  # runners.evaluate's nested runs (runners/evaluate.py)
PROG = "runners.compare"


@dataclass(frozen=True)
class CompareArgs:
    """Arguments of ``python -m runners.compare`` (give run_ids, experiment, sweep_id or filter)."""

    run_ids: list[str] = setting(doc="runs to compare, in this order", factory=list)
    experiment: str = setting("", "every run of this experiment (oldest first)")
    sweep_id: str = setting("", "every run of this -m sweep (its sweep_id tag)")
    filter: str = setting("", "an MLflow filter string, quoted for Hydra: "
                          "'filter=\"tags.data = '\"'\"'mnist'\"'\"'\"' (with experiment= or alone)")
    pgd: str = setting("auto", "the PGD column's attack (pgd50x10, ...); auto = the strongest "
                       "most runs have")
    group_by: list[str] = setting(doc="config fields that define groups (default: every field "
                                  "but the seed)", factory=list)
    paired: list[str] = setting(doc="two groups compared over their shared seeds, e.g. "
                                "[las_at,pgd_at]", factory=list)
    log: bool = setting(False, "also log the table as a new run tagged kind=comparison")
    tracking_uri: str = setting("", "MLflow tracking URI; empty = MLflow's default "
                                "(MLFLOW_TRACKING_URI)")


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
        seed: the run's ``seed`` param (None when it logged none).
        setting: the (field, value) pairs that define its group (:mod:`runners.aggregate`).
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
    seed: str | None = None
    setting: tuple[tuple[str, str], ...] = ()


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


def collect_rows(client: MlflowClient, runs: list[Run], pgd: str | None,
                 group_by: list[str] | tuple[str, ...] = ()) -> list[ComparisonRow]:
    """Read the table's numbers, seed and setting (``group_by`` fields, else the whole
    configuration but the seed) from each run."""
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
            total_s=sum(times) if times else None, epochs=len(times),
            seed=d.params.get("seed"), setting=setting_of(d.params, d.tags, group_by)))
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
    head = ["run", "policy", "AT loss", "seed", "clean %", f"PGD ({pgd or '–'}) %",
            "AutoAttack %", "worst case %", "masking checks", "s / epoch", "train s (epochs)"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|---|---|---:|" + "---:|" * 4 + "---|---:|---:|"]
    for r in rows:
        cells = [f"{r.run_name} ({r.run_id[:8]})", r.policy, r.at_loss, r.seed or "–",
                 _acc(r.clean), _acc(r.pgd), _acc(r.autoattack), _acc(r.worst_case),
                 _checks(r), _sec(r.epoch_s), f"{_sec(r.total_s)} ({r.epochs})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: aggregated columns: (header, row attribute, scale, digits).
COLUMNS = (("clean %", "clean", 100.0, 2), ("PGD %", "pgd", 100.0, 2),
           ("AutoAttack %", "autoattack", 100.0, 2), ("worst case %", "worst_case", 100.0, 2),
           ("s / epoch", "epoch_s", 1.0, 1))


def group_rows(rows: list[ComparisonRow]) -> list[Group]:
    """The groups of runs that share a setting (see :mod:`runners.aggregate`)."""
    return group_runs([r.setting for r in rows], [r.seed for r in rows])


def format_groups(rows: list[ComparisonRow], groups: list[Group], pgd: str | None) -> str:
    """Markdown table: one line per group, mean ± std (n runs) per column."""
    head = ["group", "n", "seeds"] + [h.replace("PGD", f"PGD ({pgd or '–'})")
                                      for h, *_ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|" + "---:|" * len(COLUMNS)]
    for g in groups:
        members = [rows[i] for i in g.members]
        cells = [g.label, str(len(members)), ",".join(s or "–" for s in g.seeds)]
        for _, attr, scale, digits in COLUMNS:
            stat = column_stat([getattr(r, attr) for r in members])
            cells.append(fmt_stat(stat, scale, digits, len(members)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_paired(rows: list[ComparisonRow], a: Group, b: Group, pgd: str | None) -> str:
    """Markdown table of the per-seed differences A − B: mean ± std [±95 % CI half-width]."""
    head = ["A − B", "pairs"] + [h.replace("PGD", f"PGD ({pgd or '–'})").replace(" %", " Δ pp")
                                 .replace("s / epoch", "s / epoch Δ") for h, *_ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(COLUMNS)]
    cells, pairs = [f"{a.label} − {b.label}"], 0
    for _, attr, scale, digits in COLUMNS:
        values = [getattr(r, attr) for r in rows]
        d = paired_difference(per_seed(values, a), per_seed(values, b))
        pairs = max(pairs, d.n)
        cells.append(fmt_difference(d, scale, digits))
    cells.insert(1, str(pairs))
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def find_runs(client: MlflowClient, run_ids: list[str], experiment: str,
              filter_string: str) -> list[Run]:
    """Runs by id (in the given order), or by experiment name and/or MLflow filter string."""
    from learned_at.runners.run_store import get_run

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


def compare_runs(args: CompareArgs) -> None:
    """Print (and with ``log=true`` log) the comparison tables (see the module docstring)."""
    from learned_at.runners.tracking import Tracker

    if not (args.run_ids or args.experiment or args.filter or args.sweep_id):
        raise UsageError("give run_ids=[...], experiment=<name>, sweep_id=<id> or filter=<mlflow "
                         "filter string> (see --help)")
    if args.paired and len(args.paired) != 2:
        raise UsageError(f"paired={args.paired}: takes two groups, e.g. paired=[las_at,pgd_at]")
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    client = MlflowClient(tracking_uri=uri)
    conditions = [c for c in (args.filter, args.sweep_id and f"tags.sweep_id = '{args.sweep_id}'")
                  if c]
    runs = find_runs(client, list(args.run_ids), args.experiment, " and ".join(conditions))
    if not runs:
        raise UsageError("no runs match")
    runs = [with_evaluations(client, run) for run in runs]
    pgd = pick_pgd(runs) if args.pgd == "auto" else args.pgd
    rows = collect_rows(client, runs, pgd, list(args.group_by))
    groups = group_rows(rows)
    tables = [format_comparison(rows, pgd)]
    if args.group_by or any(len(g.members) > 1 for g in groups):
        tables.append(format_groups(rows, groups, pgd))
    if args.paired:
        try:
            a, b = (find_group(groups, t) for t in args.paired)
        except ValueError as e:
            raise UsageError(str(e)) from None
        tables.append(format_paired(rows, a, b, pgd))
    table = "\n\n".join(tables)
    print(table)
    if args.log:
        exp_name = client.get_experiment(runs[0].info.experiment_id).name
        with Tracker(exp_name, run_name="comparison", tracking_uri=uri,
                     tags={COMPARISON_TAG: COMPARISON_VALUE}) as tracker:
            tracker.log_text(table + "\n", "compare/table.md")
            tracker.log_dict({"pgd": pgd, "rows": [asdict(r) for r in rows],
                              "groups": [asdict(g) for g in groups]}, "compare/rows.json")
            tracker.set_tag("compare.run_ids", ",".join(r.run_id for r in rows)[:5000])
        print(f"comparison_run_id={tracker.run_id}")


def _job(cfg: DictConfig) -> None:
    args: CompareArgs = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    exit_on_error(PROG, lambda: compare_runs(args),
                  tracking_uri=args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))


_task = hydra.main(config_path=None, config_name="compare", version_base="1.3")(_job)


def main() -> int:
    """Console-script entry point (``lat-compare``); returns the exit status."""
    register_command("compare", CompareArgs)
    return run_cli(PROG, _task, "compare")


if __name__ == "__main__":
    raise SystemExit(main())
