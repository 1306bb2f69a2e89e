"""ppo_strategy against las_at (when registered) and pgd_at: accuracy, time, strategy choices.

Usage::

    python -m benchmarks.ppo_strategy --quick          # < 1 min: digits, tiny schedule
    python -m benchmarks.ppo_strategy                  # digits (30 epochs) and MNIST (subset)
    python -m benchmarks.ppo_strategy --data digits --epochs 10

Every method is a real ``runners.cotrain`` run (MLflow in ``<out>/mlflow.db``, checkpoints in
``<out>/ck``). Per method: final clean and PGD-20 accuracy on the (sub-sampled) test set, time
per training epoch (median over epochs) and its ratio to pgd_at's in the same invocation, and the
last epoch's distribution of the chosen ε, α and K (mean and p10/p50/p90). Methods run one
after the other, their order reversed on every other data set so that drifting machine load
does not always favour the same method. ``ppo_strategy+la`` is ppo_strategy with LAS-AT's
look-ahead reward terms (robust_weight=4, clean_weight=2, as LAS-PGD-AT).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from learned_at.agents.base import policy_registry
from learned_at.runners.cotrain import cotrain

METHODS: dict[str, list[str]] = {
    "pgd_at": ["policy=pgd_at"],
    "las_at": ["policy=las_at"],
    "ppo_strategy": ["policy=ppo_strategy"],
    "ppo_strategy+la": ["policy=ppo_strategy", "policy.robust_weight=4.0",
                        "policy.clean_weight=2.0"],
}


def schedules(quick: bool, data_root: str, epochs: int | None) -> dict[str, list[str]]:
    """Per data set: the overrides of its schedule."""
    if quick:
        return {"digits": ["data=digits", "epochs=1", "data.train_subset=512",
                           "data.test_subset=128", "eval.test_subset=64"]}
    return {
        "digits": ["data=digits", f"epochs={epochs or 30}", "eval.test_subset=360"],
        "mnist": ["data=mnist", f"data.root={data_root}", f"epochs={epochs or 4}",
                  "data.train_subset=6400", "data.test_subset=1000", "eval.test_subset=256"],
    }


def summarise(client: MlflowClient, run_id: str) -> dict[str, float]:
    """Final accuracies, mean epoch time and the last epoch's strategy statistics of a run."""
    m = client.get_run(run_id).data.metrics
    times = [h.value for h in client.get_metric_history(run_id, "time/epoch_s")]
    out = {"clean": m["eval/clean_acc"], "pgd20": m["eval/pgd20_acc"],
           "epoch_s": statistics.median(times)}  # median: robust to load spikes of a shared CPU
    for key in ("eps", "alpha", "steps"):
        for stat in ("mean", "p10", "p50", "p90"):
            if f"policy/{key}_{stat}" in m:
                out[f"{key}_{stat}"] = m[f"policy/{key}_{stat}"]
    return out


def fmt_dist(r: dict[str, float], key: str) -> str:
    if f"{key}_mean" not in r:
        return "-"
    return (f"{r[f'{key}_mean']:.3g} ({r.get(f'{key}_p10', 0):.3g}/{r.get(f'{key}_p50', 0):.3g}/"
            f"{r.get(f'{key}_p90', 0):.3g})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="< 1 min: digits, one epoch")
    parser.add_argument("--data", default=None, help="comma-separated subset of digits,mnist")
    parser.add_argument("--epochs", type=int, default=None, help="override every schedule")
    parser.add_argument("--methods", default=None, help="comma-separated subset of methods")
    parser.add_argument("--data-root", default="/work/shared/data")
    parser.add_argument("--out", default="/tmp/ppo_strategy_bench")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 is fastest on a shared, loaded CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the table from the runs already in <out>/mlflow.db")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{out.resolve()}/mlflow.db"
    plans = schedules(args.quick, args.data_root, args.epochs)
    if args.data:
        plans = {k: v for k, v in plans.items() if k in args.data.split(",")}
    registered = policy_registry()
    methods = [m for m in METHODS if METHODS[m][0].split("=")[1] in registered]
    if args.methods:
        methods = [m for m in methods if m in args.methods.split(",")]
    if args.quick and not args.report_only:
        methods = [m for m in methods if m != "ppo_strategy+la"]
    results: dict[str, dict[str, dict[str, float]]] = {}
    client = MlflowClient(uri)
    if args.report_only:
        exp = client.get_experiment_by_name("learned-at")
        for run in client.search_runs([exp.experiment_id] if exp else [],
                                      filter_string="attributes.status = 'FINISHED'",
                                      order_by=["attributes.start_time ASC"]):
            method, _, data = run.data.tags.get("mlflow.runName", "").rpartition("-")
            if method in methods and data in plans:
                results.setdefault(data, {})[method] = summarise(client, run.info.run_id)
    for i, (data, schedule) in enumerate(plans.items()):
        if args.report_only:
            break
        order = methods if i % 2 == 0 else methods[::-1]
        results[data] = {}
        for method in order:
            t0 = time.perf_counter()
            run_id = cotrain([*METHODS[method], *schedule, f"seed={args.seed}",
                              f"checkpoint_dir={out}/ck", "progress=false",
                              f"run_name={method}-{data}"], uri)
            results[data][method] = summarise(client, run_id)
            results[data][method]["wall_s"] = time.perf_counter() - t0
            print(f"{data} {method}: {results[data][method]}", flush=True)
    lines = [f"threads={args.threads}, cpus={os.cpu_count()}, load={os.getloadavg()[0]:.1f} "
             f"(1-min load average at the end), seed={args.seed}", "",
             "| data | method | clean | PGD-20 | s/epoch | ×pgd_at | ε mean (p10/p50/p90) "
             "| α mean (p10/p50/p90) | K mean (p10/p50/p90) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for data, rows in results.items():
        base = rows.get("pgd_at", {}).get("epoch_s")
        for method in [m for m in methods if m in rows]:
            r = rows[method]
            ratio = f"{r['epoch_s'] / base:.2f}" if base else "-"
            lines.append(f"| {data} | {method} | {r['clean']:.3f} | {r['pgd20']:.3f} | "
                         f"{r['epoch_s']:.2f} | {ratio} | {fmt_dist(r, 'eps')} | "
                         f"{fmt_dist(r, 'alpha')} | {fmt_dist(r, 'steps')} |")
        if "las_at" not in rows:
            lines.append(f"| {data} | las_at | pending (not registered on this branch) "
                         "| | | | | | |")
    table = "\n".join(lines)
    print(table)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
