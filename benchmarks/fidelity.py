"""Each paper's qualitative claim at CPU scale, over several seeds, in one table.

Usage::

    python -m benchmarks.fidelity --quick                 # digits, 3 seeds (< 30 min on 2 CPUs)
    python -m benchmarks.fidelity --full --data-root ../shared/data   # the papers' settings (GPU)
    python -m benchmarks.fidelity --quick --claims co,dynamic --seeds 0,1,2,3 --workers 2

Every row names a claim, the setting it is measured in, the measured means ± std over seeds
(paired by seed where two methods are compared: the mean difference ± its std and the 95 %
t-interval) and a verdict — *holds*, *within noise* (the interval contains 0) or *does not
hold*. A claim that does not hold at this scale is reported as not holding: nothing here is
tuned per claim, every method runs its own preset.

Methods are one entry each in :data:`METHODS` (overrides on top of a setting, plus the claims
they take part in): adding a method to the catastrophic-overfitting row, e.g. Fast-BAT or
N-FGSM, is one line, ``"fast_bat": Method(("policy=...", "at_loss=fast_bat"), ("co",))``.

Robust accuracy: ``--quick`` uses PGD-50 with 10 restarts (α = ε/4) on the first
``--test`` test samples (AutoAttack's four attacks take several times longer than all the
training on this CPU); ``--full`` uses the standard AutoAttack (pyautoattack). Costs: the
training attack's forward/backward passes per sample and epoch (hardware-independent; the
look-ahead of LAS-AT / PPO is *not* in it), and process CPU seconds per epoch (one thread per
worker; this one includes everything the method computes). Runs execute in ``--workers``
processes with one intra-op thread each.

Settings (``--quick``: digits 8x8, ``digits_cnn``, batch 128, 6 epochs, lr 0.1 piecewise at
50 %/75 %; sized to finish in about 25 minutes on two CPU cores at a load average of 10–14):
``standard`` = L∞ ε = 0.2, and the CO claim runs there too. No setting on digits made
single-step AT collapse in the classical sense (robust, then suddenly not): FGSM-RS (α = 1.25ε,
2ε, 3ε) and FGSM without a random start, at ε = 0.2, 0.25, 0.3 and 0.4, 10 to 30 epochs, never
lost a PGD robustness it had reached; at ε ≥ 0.3 it ends FGSM-robust but not PGD-robust (FGSM
0.42 vs PGD-10 0.13 after 30 epochs at ε = 0.3), and PGD-AT does not train there at 10 epochs
(clean 0.25) either (benchmarks/fidelity.md). ``--full`` measures the claim where the
literature sees it: CIFAR-10, PreAct ResNet-18, ε = 16/255 (Fast-BAT's table: Fast-AT
collapses, 44.15 ± 7.27 clean), 110 epochs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

#: --quick and --full presets: data, schedule, evaluation.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "base": ("data=digits", "target=digits_cnn", "device=cpu"),
        "settings": {"standard": ("threat.eps=0.2",), "co": ("threat.eps=0.2",)},
        "epochs": 6, "test": 200, "robust": "pgd50x10", "workers": 2,
        "seeds": (0, 1, 2),
    },
    "full": {
        "base": ("data=cifar10", "target=preact_resnet18", "device=auto"),
        "settings": {"standard": ("threat.eps=0.03137254901960784",
                                  "optim.milestones=[0.9090909090909091,0.9545454545454546]"),
                     "co": ("threat.eps=0.06274509803921569",
                            "optim.milestones=[0.9090909090909091,0.9545454545454546]")},
        "epochs": 110, "test": 1000, "robust": "autoattack", "workers": 1,
        "seeds": (0, 1, 2),
    },
}


@dataclass(frozen=True)
class Method:
    """One arm: overrides on top of the setting, and the claims it takes part in.

    Attributes:
        overrides: Hydra overrides (``policy=...``, ``at_loss=...``, fields).
        claims: keys of :data:`CLAIMS` this method is an arm of.
        per_epoch: evaluate clean / FGSM / PGD-10 after every epoch (for the CO monitor).
    """

    overrides: tuple[str, ...]
    claims: tuple[str, ...]
    per_epoch: bool = False


PPO_LAS_REWARD = ("policy=ppo_strategy", "policy.robust_weight=4", "policy.clean_weight=2",
                  "policy.lookahead_per_sample=false")

#: every arm of the benchmark; one entry per method.
METHODS: dict[str, Method] = {
    "fgsm_rs": Method(("policy=fgsm_rs",), ("co",), per_epoch=True),
    "fgsm_sdi": Method(("policy=fgsm_sdi",), ("co",), per_epoch=True),
    "fgsm_pgi": Method(("policy=fgsm_pgi", "at_loss=pgi"), ("co",), per_epoch=True),
    "pgd_at": Method(("policy=pgd_at",), ("dynamic", "curriculum", "trades")),
    "dynamic": Method(("policy=dynamic",), ("dynamic",)),
    "curriculum": Method(("policy=curriculum",), ("curriculum",)),
    "trades": Method(("policy=pgd_at", "at_loss=trades"), ("trades",)),
    "las_at": Method(("policy=las_at",), ("las_at", "learns")),
    "pgd_at_k5": Method(("policy=pgd_at", "policy.steps=5"), ("las_at",)),
    "ppo": Method(PPO_LAS_REWARD, ("las_at",)),
}


@dataclass(frozen=True)
class RunResult:
    """What one (method, setting, seed) run measured."""

    method: str
    setting: str
    seed: int
    clean: float
    robust: float
    attack_passes: float          # training-attack passes per sample and epoch
    cpu_s_per_epoch: float
    wall_s: float
    per_epoch: list[list[float]] = field(default_factory=list)  # clean, fgsm, pgd10
    co_epochs: list[int] = field(default_factory=list)
    strategy: list[dict[str, float]] = field(default_factory=list)  # LAS-AT, per epoch


def run_one(method: str, setting: str, seed: int, preset: str, data_root: str | None,
            overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train and evaluate one arm in this process (one intra-op thread)."""
    import torch

    from benchmarks.loop import Stepper, make_run
    from learned_at.runners.co_monitor import detect_co
    from learned_at.runners.config import MonitorConfig
    from learned_at.runners.robustness import evaluate

    torch.set_num_threads(1)
    p = PRESETS[preset]
    root = (f"data.root={data_root}",) if data_root else ()
    trainer = Stepper(make_run([
        *p["base"], *root, *p["settings"][setting], f"epochs={p['epochs']}", f"seed={seed}",
        "progress=false", "monitor.enabled=false", "checkpoint_dir=/tmp/fidelity_ck",
        *METHODS[method].overrides, *overrides]))
    run = trainer.run
    n_test = min(p["test"], len(run.test.y))
    x_test, y_test = run.test.x[:n_test], run.test.y[:n_test]
    per_epoch, co_epochs, strategy = [], [], []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    eval_cpu = 0.0
    samples = 0
    for epoch in range(run.epochs):
        trainer.train_epoch(epoch)
        samples += len(run.loader) * run.config.batch_size
        summary = run.distributions.end_epoch(epoch)
        if method == "las_at" or "learns" in METHODS[method].claims:
            strategy.append({**{k: float(v) for k, v in run.policy.epoch_metrics().items()},
                             **{f"{h}_mean": summary[h]["mean"] for h in summary}})
        if METHODS[method].per_epoch:
            c0 = time.process_time()
            r = evaluate(run.target.model, x_test, y_test, ["clean", "fgsm", "pgd10"],
                         run.geometry, run.eps, 500, torch.Generator().manual_seed(seed))
            accs = [r[k]["acc"] for k in ("clean", "fgsm", "pgd10")]
            prev = per_epoch[-1] if per_epoch else None
            if detect_co(accs[2], accs[1], prev[2] if prev else None, prev[1] if prev else None,
                         MonitorConfig()):
                co_epochs.append(epoch)
            per_epoch.append(accs)
            eval_cpu += time.process_time() - c0
    cpu = time.process_time() - cpu0 - eval_cpu
    # the CO claim reads the per-epoch curves; only the other claims need the strong attack
    robust_attack = p["robust"] if set(METHODS[method].claims) - {"co"} else "pgd10"
    final = evaluate(run.target.model, x_test, y_test, ["clean", robust_attack], run.geometry,
                     run.eps, 500, torch.Generator().manual_seed(seed), seed=seed)
    return vars(RunResult(
        method=method, setting=setting, seed=seed, clean=final["clean"]["acc"],
        robust=final[robust_attack]["acc"], attack_passes=run.env.samples_evaluated / samples,
        cpu_s_per_epoch=cpu / run.epochs, wall_s=time.perf_counter() - wall0,
        per_epoch=per_epoch, co_epochs=co_epochs, strategy=strategy))


# -- statistics and verdicts -------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, float, int]:
    """Mean, std and 95 % t half-width of the per-seed differences a − b; number of pairs."""
    from learned_at.runners.aggregate import paired_difference

    d = paired_difference(a, b)
    return (d.mean or 0.0, d.std or 0.0, d.ci95 if d.ci95 is not None else math.inf, d.n)


def direction(mean: float, ci: float) -> str:
    """'>' / '<' when the 95 % interval excludes 0, else '≈'."""
    return ">" if mean - ci > 0 else "<" if mean + ci < 0 else "≈"


def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def pm(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    m, s = mean_std(values)
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def diff_text(mean: float, std: float, ci: float) -> str:
    return f"{100 * mean:+.1f} ± {100 * std:.1f} [±{100 * ci:.1f}]"


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    claim: str
    setting: str
    measured: str
    verdict: str


Runs = dict[tuple[str, str], list[dict[str, Any]]]


def _by_seed(runs: Runs, method: str, setting: str, key: str) -> dict[int, float]:
    return {r["seed"]: r[key] for r in runs.get((method, setting), [])}


def _cost(runs: Runs, method: str, setting: str) -> str:
    rs = runs[(method, setting)]
    return (f"{statistics.fmean(r['attack_passes'] for r in rs):.1f} passes, "
            f"{statistics.fmean(r['cpu_s_per_epoch'] for r in rs):.1f} CPU s/epoch")


def _collapsed(r: dict[str, Any]) -> bool:
    """CO in a run: it ends collapsed — final PGD-10 accuracy below half of its best epoch (a
    best of at least 10 %) while FGSM accuracy stays at least 10 points above PGD-10 — or it
    never becomes PGD-robust although FGSM-robust (final PGD-10 < 5 %, FGSM ≥ 20 %). The
    epochs the CO monitor's one-epoch rule flags are reported alongside."""
    if not r["per_epoch"]:
        return False
    best = max(e[2] for e in r["per_epoch"])
    _, fgsm, pgd = r["per_epoch"][-1]
    ends_collapsed = best >= 0.1 and pgd < 0.5 * best and fgsm >= pgd + 0.1
    never_robust = pgd < 0.05 and fgsm >= 0.2
    return ends_collapsed or never_robust


def claim_co(runs: Runs) -> list[Row]:
    """FGSM-RS collapses in the CO setting; the initialisation methods (and any other arm of
    this claim) do not."""
    rows = []
    arms = [m for m, spec in METHODS.items() if "co" in spec.claims and (m, "co") in runs]
    for m in arms:
        rs = runs[(m, "co")]
        n_co = sum(_collapsed(r) for r in rs)
        best = [max(e[2] for e in r["per_epoch"]) for r in rs]
        final = [r["per_epoch"][-1][2] for r in rs]
        fgsm = [r["per_epoch"][-1][1] for r in rs]
        flagged = sorted({e + 1 for r in rs for e in r["co_epochs"]})
        measured = (f"CO in {n_co}/{len(rs)} seeds; PGD-10 best epoch {pm(best)} → final "
                    f"{pm(final)}, final FGSM {pm(fgsm)}; clean {pm([r['clean'] for r in rs])}"
                    f"; epochs the CO monitor flags: {flagged or 'none'}")
        if m == "fgsm_rs":
            claim = "FGSM-RS overfits catastrophically"
            ok = n_co * 2 > len(rs)
        else:
            claim = f"{m} does not overfit catastrophically"
            ok = n_co == 0
        rows.append(Row(claim, "co", measured, "holds" if ok else "does not hold"))
    return rows


def _pair_row(runs: Runs, claim: str, a: str, b: str, setting: str, want: str,
              cost_note: str = "") -> Row:
    """Paired robust (and clean) comparison of a vs b; ``want`` is '>=' or '≈'."""
    rob = paired(_by_seed(runs, a, setting, "robust"), _by_seed(runs, b, setting, "robust"))
    cln = paired(_by_seed(runs, a, setting, "clean"), _by_seed(runs, b, setting, "clean"))
    dirn = direction(rob[0], rob[2])
    if want == ">=":
        verdict = {">": "holds", "≈": "within noise", "<": "does not hold"}[dirn]
    else:
        verdict = ("holds (no significant difference)" if dirn == "≈"
                   else f"does not hold ({a} {dirn} {b})")
    rs_a, rs_b = runs[(a, setting)], runs[(b, setting)]
    measured = (f"robust {a} {pm([r['robust'] for r in rs_a])} vs {b} "
                f"{pm([r['robust'] for r in rs_b])} (Δ {diff_text(rob[0], rob[1], rob[2])}, "
                f"n={rob[3]}); clean Δ {diff_text(cln[0], cln[1], cln[2])}; cost {a} "
                f"{_cost(runs, a, setting)} vs {b} {_cost(runs, b, setting)}{cost_note}")
    return Row(claim, setting, measured, verdict)


def _cheaper(row: Row, runs: Runs, a: str, b: str) -> Row:
    """The row with "; not cheaper" added when arm a's attack costs b's or more."""
    mean = {m: statistics.fmean(r["attack_passes"] for r in runs[(m, row.setting)])
            for m in (a, b)}
    verdict = row.verdict if mean[a] < mean[b] else f"{row.verdict}; not cheaper"
    return Row(row.claim, row.setting, row.measured, verdict)


def claim_dynamic(runs: Runs) -> list[Row]:
    row = _pair_row(runs, "Dynamic AT ≥ PGD-AT in robust accuracy at lower attack cost "
                    "(paper, MNIST: 91.27 vs 90.62 PGD-20)", "dynamic", "pgd_at", "standard",
                    ">=")
    return [_cheaper(row, runs, "dynamic", "pgd_at")]


def claim_las_at(runs: Runs) -> list[Row]:
    rows = [_pair_row(runs, "LAS-AT ≥ PGD-AT at equal attack cost (paper, CIFAR-10)",
                      "las_at", "pgd_at_k5", "standard", ">=",
                      " (PGD-AT K = 5 = the mean of LAS-AT's K grid; the look-ahead's "
                      "extra cost shows in CPU s only)")]
    if ("ppo", "standard") in runs:
        rows.append(_pair_row(runs, "PPO on the same action space and reward ≈ LAS-AT",
                              "ppo", "las_at", "standard", "≈"))
    return rows


def claim_learns(runs: Runs) -> list[Row]:
    """The strategy distribution departs measurably from uniform (entropy drop ≥ 0.1 nats)."""
    rs = runs[("las_at", "standard")]
    first = [r["strategy"][0]["policy/entropy"] for r in rs]
    last = [r["strategy"][-1]["policy/entropy"] for r in rs]
    drop = [a - b for a, b in zip(first, last)]
    eps = [r["strategy"][-1].get("eps_mean", float("nan")) for r in rs]
    steps = [r["strategy"][-1].get("steps_mean", float("nan")) for r in rs]
    measured = (f"entropy {mean_std(first)[0]:.3f} (epoch 1) → {pm(last, 1.0, 3)} nats (last); "
                f"drop {pm(drop, 1.0, 3)}; last-epoch mean ε {pm(eps, 1.0, 3)}, "
                f"mean K {pm(steps, 1.0, 2)}")
    ok = min(drop) >= 0.1
    n_up = sum(e > r["strategy"][0].get("eps_mean", e) for e, r in zip(eps, rs))
    measured += f"; ε mean rose in {n_up}/{len(rs)} seeds"
    return [Row("the learned LAS-AT strategy departs from uniform (entropy drop ≥ 0.1 nats in "
                "every seed)", "standard", measured, "holds" if ok else "does not hold")]


def claim_curriculum(runs: Runs) -> list[Row]:
    row = _pair_row(runs, "curriculum AT ≈ PGD-AT robustness at lower attack cost",
                    "curriculum", "pgd_at", "standard", "≈")
    return [_cheaper(row, runs, "curriculum", "pgd_at")]


def claim_trades(runs: Runs) -> list[Row]:
    row = _pair_row(runs, "TRADES vs PGD-AT: clean ↑, robust ≈", "trades", "pgd_at",
                    "standard", "≈")
    cln = paired(_by_seed(runs, "trades", "standard", "clean"),
                 _by_seed(runs, "pgd_at", "standard", "clean"))
    clean_up = direction(cln[0], cln[2]) == ">"
    verdict = "holds" if row.verdict == "holds" and clean_up else (
        f"does not hold (clean {direction(cln[0], cln[2])}, robust "
        f"{'≈' if row.verdict == 'holds' else '≠'})")
    return [Row(row.claim, row.setting, row.measured, verdict)]


#: claim key -> (rows builder, the (method, setting) arms it needs).
CLAIMS: dict[str, tuple[Callable[[Runs], list[Row]], Callable[[], list[tuple[str, str]]]]] = {
    "co": (claim_co, lambda: [(m, "co") for m, s in METHODS.items() if "co" in s.claims]),
    "dynamic": (claim_dynamic, lambda: [("dynamic", "standard"), ("pgd_at", "standard")]),
    "las_at": (claim_las_at, lambda: [("las_at", "standard"), ("pgd_at_k5", "standard"),
                                      ("ppo", "standard")]),
    "learns": (claim_learns, lambda: [("las_at", "standard")]),
    "curriculum": (claim_curriculum, lambda: [("curriculum", "standard"),
                                              ("pgd_at", "standard")]),
    "trades": (claim_trades, lambda: [("trades", "standard"), ("pgd_at", "standard")]),
}


def format_table(rows: list[Row]) -> str:
    lines = ["| claim | setting | measured (mean ± std over seeds; Δ paired by seed, "
             "[95 % CI]) | verdict |", "|---|---|---|---|"]
    lines += [f"| {r.claim} | {r.setting} | {r.measured} | {r.verdict} |" for r in rows]
    return "\n".join(lines)


def format_strategy(runs: Runs) -> str:
    """LAS-AT's strategy statistics by epoch (mean over seeds)."""
    rs = runs.get(("las_at", "standard"), [])
    if not rs:
        return ""
    keys = [k for k in ("policy/entropy", "eps_mean", "alpha_mean", "steps_mean")
            if k in rs[0]["strategy"][0]]
    lines = ["| epoch | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    for e in range(len(rs[0]["strategy"])):
        cells = [f"{statistics.fmean(r['strategy'][e][k] for r in rs):.4g}" for k in keys]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(path: str) -> int:
    """Print the table and the strategy statistics of a results file written by ``--out``."""
    with open(path) as f:
        saved = json.load(f)
    runs: Runs = {}
    for r in saved["runs"]:
        runs.setdefault((r["method"], r["setting"]), []).append(r)
    claims = [c for c in CLAIMS if all(arm in runs for arm in CLAIMS[c][1]()
                                       if arm[0] != "ppo")]
    print(format_table([row for c in claims for row in CLAIMS[c][0](runs)]))
    strategy = format_strategy(runs)
    if strategy:
        print("\nLAS-AT strategy by epoch (mean over seeds):\n\n" + strategy)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="digits, CPU (the default)")
    mode.add_argument("--full", action="store_true", help="CIFAR-10, the papers' settings")
    parser.add_argument("--data-root", default=None, help="folder of the data sets (--full)")
    parser.add_argument("--claims", default=",".join(CLAIMS), help="comma-separated claims")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=None, help="write every run's results as JSON")
    parser.add_argument("--report", default=None,
                        help="print the table of a JSON written by --out (no training)")
    args = parser.parse_args(argv)
    if args.report:
        return report(args.report)
    preset = "full" if args.full else "quick"
    p = PRESETS[preset]
    if args.epochs:
        p = PRESETS[preset] = {**p, "epochs": args.epochs}
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else p["seeds"]
    claims = [c.strip() for c in args.claims.split(",") if c.strip()]
    unknown = [c for c in claims if c not in CLAIMS]
    if unknown:
        parser.error(f"unknown claims {unknown}; valid: {', '.join(CLAIMS)}")
    arms = sorted({arm for c in claims for arm in CLAIMS[c][1]()})
    jobs = [(m, s, seed) for seed in seeds for m, s in arms]
    workers = args.workers or p["workers"]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    print(f"fidelity --{preset}: {len(jobs)} runs ({len(arms)} arms × {len(seeds)} seeds), "
          f"{p['epochs']} epochs, {workers} workers, load {load0[0]:.1f}", flush=True)
    runs: Runs = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_one, m, s, seed, preset, args.data_root, ())
                   for m, s, seed in jobs]
        for i, f in enumerate(futures, 1):
            r = f.result()
            runs.setdefault((r["method"], r["setting"]), []).append(r)
            print(f"[{i}/{len(jobs)} {time.perf_counter() - t0:.0f}s] {r['method']} "
                  f"{r['setting']} seed {r['seed']}: clean {pct(r['clean'])} robust "
                  f"{pct(r['robust'])} ({r['wall_s']:.0f}s)", flush=True)
    rows = [row for c in claims for row in CLAIMS[c][0](runs)]
    elapsed = time.perf_counter() - t0
    load1 = os.getloadavg()
    print(f"\n## fidelity --{preset}: {elapsed / 60:.1f} min, load average {load0[0]:.1f} → "
          f"{load1[0]:.1f} (15-min {load1[2]:.1f}), {workers} workers × 1 thread, seeds "
          f"{list(seeds)}, {p['epochs']} epochs, robust = {p['robust']} on {p['test']} test "
          "samples\n")
    print(format_table(rows))
    strategy = format_strategy(runs)
    if strategy:
        print("\nLAS-AT strategy by epoch (mean over seeds):\n\n" + strategy)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"preset": preset, "elapsed_s": elapsed, "load": [load0, load1],
                       "runs": [r for rs in runs.values() for r in rs],
                       "rows": [vars(r) for r in rows]}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
