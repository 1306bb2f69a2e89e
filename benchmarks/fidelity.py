"""Each paper's qualitative claim at CPU scale, over several seeds, in one table.

Usage::

    python -m benchmarks.fidelity --quick                 # digits, 3 seeds (< 30 min on 2 CPUs)
    python -m benchmarks.fidelity --mnist --out benchmarks/results/mnist.json   # a few hours
    python -m benchmarks.fidelity --mnist --claims co,sparse --out mnist.json   # claim by claim
    python -m benchmarks.fidelity --report mnist.json     # the table of finished runs
    python -m benchmarks.fidelity --full --data-root ../shared/data   # the papers' settings (GPU)

Every row names a claim, the setting it is measured in, the measured means ± std over seeds
(paired by seed where two methods are compared: the mean difference ± its std and the 95 %
t-interval), the paper's effect, and a verdict at the tier's resolution
(:mod:`benchmarks.fidelity_claims`). A claim that does not hold at this scale is reported as
not holding: nothing here is tuned per claim, every method runs its own preset.

Methods are one entry each in :data:`METHODS` (overrides on top of a setting, plus the claims
they take part in). ``--out`` writes every finished run at once (atomically); a rerun with the
same ``--out`` skips the runs already there, so a long tier resumes claim by claim after an
interruption.

Tiers:

* ``--quick`` (the smoke tier): digits 8x8, ``digits_cnn``, batch 128, 6 epochs, lr 0.1
  piecewise at 50 %/75 %, ε = 0.2 for every claim, robust = PGD-50 × 10 restarts on 200 test
  images. Sized for about 25 minutes on two busy cores; no digits setting made single-step AT
  collapse (benchmarks/fidelity.md).
* ``--mnist``: the full MNIST (60 000 / 10 000, ``--data-root``), ``mnist_small`` (the Dynamic
  AT CNN at half width), SGD lr 0.01 with ×0.1 at 40 % and 80 % of training (the Dynamic paper's
  MNIST schedule, 20/40 of 50 epochs), batch 128, seeds 0–2. Settings: ``standard`` L∞
  ε = 0.3, 4 epochs, robust accuracy from AutoAttack's APGD-CE + APGD-T
  (``autoattack_apgd``) on the first 2 000 test images, and the standard AutoAttack on the
  first 500 for seed 0 of each arm to bound the gap; ``co`` L∞ ε = 0.45 (α = 1.25ε for
  FGSM-RS), 6 epochs, per-epoch clean / FGSM / PGD-10 on 1 000 test images, final PGD-50 × 3;
  ``sparse`` L0 k = 20 pixels, 6 epochs, per-epoch clean / 1-step / 100-step sPGD, final
  Sparse-AutoAttack (100 sPGD steps per stage, 1 000 Sparse-RS queries) on 1 000 images.
  The CO search that chose ε = 0.45 (at 0.35 FGSM-RS collapsed in 1 seed of 3) is in
  benchmarks/fidelity.md; PGD-AT does not train at 0.45 either, so this setting shows FGSM-RS's
  collapse but cannot show a method avoiding it (fidelity.md says what to run instead).
* ``--full``: CIFAR-10, PreAct ResNet-18, the papers' settings (GPU; standard AutoAttack).

Costs: the training attack's forward/backward passes per sample and epoch (hardware-
independent; the look-ahead of LAS-AT / PPO is *not* in it) and process CPU seconds per epoch
(one intra-op thread per worker; everything the method computes). Runs execute in
``--workers`` processes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.fidelity_claims import (Effect, Row, Runs, cheaper, check_rows, co_rows,
                                        format_strategy, format_table, mean_std, pair_row, pct,
                                        pm)

_CIFAR_MILESTONES = "optim.milestones=[0.9090909090909091,0.9545454545454546]"

#: tiers: data, settings, epochs per setting, test images, attacks.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "base": ("data=digits", "target=digits_cnn", "device=cpu"),
        "settings": {"standard": ("threat.eps=0.2",), "co": ("threat.eps=0.2",)},
        "epochs": {"standard": 6, "co": 6}, "test": 200, "curve_test": 200,
        "robust": {"standard": "pgd50x10", "co": "pgd10"}, "check": None, "workers": 2,
        "seeds": (0, 1, 2), "data_root": None,
    },
    "mnist": {
        "base": ("data=mnist", "target=mnist_small", "device=cpu", "optim.milestones=[0.4,0.8]"),
        "settings": {"standard": ("threat.eps=0.3",), "co": ("threat.eps=0.45",),
                     "sparse": ("threat=l0", "threat.k=20")},
        "epochs": {"standard": 4, "co": 6, "sparse": 6}, "test": 2000, "curve_test": 1000,
        "robust": {"standard": "autoattack_apgd", "co": "pgd50x3",
                   "sparse": "sparse_autoattack100x1000"},
        "robust_test": {"co": 1000, "sparse": 1000},
        "curve": {"sparse": ("clean", "fgsm", "spgd_u100")},
        # LAS-AT's MNIST K grid is 3..14 (mean 8.5): PGD-AT at K = 9, not below it
        "method_overrides": {"pgd_at_kmean": ("policy.steps=9",)},
        "check": ("autoattack", 500), "workers": 2, "seeds": (0, 1, 2),
        "data_root": "../shared/data",
    },
    "full": {
        "base": ("data=cifar10", "target=preact_resnet18", "device=auto"),
        "settings": {"standard": ("threat.eps=0.03137254901960784", _CIFAR_MILESTONES),
                     "co": ("threat.eps=0.06274509803921569", _CIFAR_MILESTONES)},
        "epochs": {"standard": 110, "co": 110}, "test": 1000, "curve_test": 1000,
        "robust": {"standard": "autoattack", "co": "pgd10"}, "check": None, "workers": 1,
        "seeds": (0, 1, 2), "data_root": "../shared/data",
    },
}


@dataclass(frozen=True)
class Method:
    """One arm: overrides on top of the setting, and the claims it takes part in.

    Attributes:
        overrides: Hydra overrides (``policy=...``, ``at_loss=...``, fields).
        claims: keys of :data:`CLAIMS` this method is an arm of.
        per_epoch: evaluate clean / FGSM / PGD-10 after every epoch (the CO curves).
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
    "fgsm_pgi": Method(("policy=fgsm_pgi",), ("co",), per_epoch=True),
    "fast_bat": Method(("policy=fgsm_rs", "at_loss=fast_bat"), ("co",), per_epoch=True),
    "n_fgsm": Method(("policy=n_fgsm",), ("co",), per_epoch=True),
    "sat_1step": Method(("policy=spgd_at", "policy.steps=1", "at_loss=ce"), ("sparse",),
                        per_epoch=True),
    "fast_ls_l0": Method(("policy=fast_ls_l0",), ("sparse",), per_epoch=True),
    "pgd_at": Method(("policy=pgd_at",), ("dynamic", "curriculum", "trades")),
    "dynamic": Method(("policy=dynamic",), ("dynamic",)),
    "curriculum": Method(("policy=curriculum",), ("curriculum",)),
    "trades": Method(("policy=pgd_at", "at_loss=trades"), ("trades",)),
    "las_at": Method(("policy=las_at",), ("las_at", "learns")),
    "pgd_at_kmean": Method(("policy=pgd_at", "policy.steps=5"), ("las_at",)),
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
    load: float                   # 1-minute load average when the run ended
    per_epoch: list[list[float]] = field(default_factory=list)  # clean, fgsm, pgd10
    co_epochs: list[int] = field(default_factory=list)
    strategy: list[dict[str, float]] = field(default_factory=list)  # LAS-AT, per epoch
    robust_mask: str = ""         # per test image, '1' = robust (comparison claims)
    check: dict[str, float] = field(default_factory=dict)  # the AutoAttack gap, if measured


def _mask_text(mask: Any) -> str:
    return "".join("1" if bool(v) else "0" for v in mask.tolist())


def run_one(method: str, setting: str, seed: int, preset: str, data_root: str | None,
            epochs: int | None = None) -> dict[str, Any]:
    """Train and evaluate one arm in this process (one intra-op thread)."""
    import torch

    from benchmarks.loop import Stepper, make_run
    from learned_at.runners.co_monitor import detect_co
    from learned_at.runners.config import MonitorConfig
    from learned_at.runners.robustness import evaluate

    torch.set_num_threads(1)
    p = PRESETS[preset]
    root = (f"data.root={data_root}",) if data_root else ()
    n_epochs = epochs or p["epochs"][setting]
    trainer = Stepper(make_run([
        *p["base"], *root, *p["settings"][setting], f"epochs={n_epochs}", f"seed={seed}",
        "progress=false", "monitor.enabled=false", "checkpoint_dir=/tmp/fidelity_ck",
        *METHODS[method].overrides, *p.get("method_overrides", {}).get(method, ())]))
    run = trainer.run
    n_curve = min(p["curve_test"], len(run.test.y))
    x_curve, y_curve = run.test.x[:n_curve], run.test.y[:n_curve]
    per_epoch, co_epochs, strategy = [], [], []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    eval_cpu = 0.0
    samples = 0
    for epoch in range(run.epochs):
        trainer.train_epoch(epoch)
        samples += len(run.loader) * run.config.batch_size
        summary = run.distributions.end_epoch(epoch)
        if "learns" in METHODS[method].claims:
            strategy.append({**{k: float(v) for k, v in run.policy.epoch_metrics().items()},
                             **{f"{h}_mean": summary[h]["mean"] for h in summary}})
        if METHODS[method].per_epoch:
            c0 = time.process_time()
            names = list(curve_attacks(preset, setting))
            r = evaluate(run.target.model, x_curve, y_curve, names, run.geometry, run.eps, 500,
                         torch.Generator().manual_seed(seed))
            accs = [r[k]["acc"] for k in names]
            prev = per_epoch[-1] if per_epoch else None
            if detect_co(accs[2], accs[1], prev[2] if prev else None, prev[1] if prev else None,
                         MonitorConfig()):
                co_epochs.append(epoch)
            per_epoch.append(accs)
            eval_cpu += time.process_time() - c0
    cpu = time.process_time() - cpu0 - eval_cpu
    robust_attack = p["robust"][setting]
    n_test = min(p.get("robust_test", {}).get(setting, p["test"]), len(run.test.y))
    x_test, y_test = run.test.x[:n_test], run.test.y[:n_test]
    masks: dict[str, Any] = {}
    final = evaluate(run.target.model, x_test, y_test, ["clean", robust_attack], run.geometry,
                     run.eps, 500, torch.Generator().manual_seed(seed), seed=seed, masks=masks)
    check: dict[str, float] = {}
    if p["check"] and seed == 0 and setting == "standard":
        attack, n = p["check"]
        strong = evaluate(run.target.model, x_test[:n], y_test[:n], [attack], run.geometry,
                          run.eps, 500, seed=seed)
        ours = float(masks[robust_attack][:n].float().mean())
        check = {"n": n, attack: strong[attack]["acc"], robust_attack: ours,
                 "gap": ours - strong[attack]["acc"]}
    return vars(RunResult(
        method=method, setting=setting, seed=seed, clean=final["clean"]["acc"],
        robust=final[robust_attack]["acc"], attack_passes=run.env.samples_evaluated / samples,
        cpu_s_per_epoch=cpu / run.epochs, wall_s=time.perf_counter() - wall0,
        load=os.getloadavg()[0], per_epoch=per_epoch, co_epochs=co_epochs, strategy=strategy,
        robust_mask=_mask_text(masks[robust_attack]) if setting == "standard" else "",
        check=check))


def curve_attacks(preset: str, setting: str) -> tuple[str, str, str]:
    """The per-epoch (clean, single-step, multi-step) attacks of a setting's CO curves."""
    return PRESETS[preset].get("curve", {}).get(setting, ("clean", "fgsm", "pgd10"))


# -- the claims -------------------------------------------------------------------------------
CO_ARMS = ("fgsm_rs", "fgsm_sdi", "fgsm_pgi", "fast_bat", "n_fgsm")

#: claim key -> the effect the tier must resolve (see benchmarks.fidelity_claims).
EFFECTS: dict[str, Effect] = {
    "dynamic": Effect(">=", 0.0065, "Dynamic AT paper, MNIST PGD-20: 91.27 vs 90.62"),
    "las_at": Effect(">=", 0.01, "the paper's gain is on CIFAR-10; decided against +1 point"),
    "trades_robust": Effect("≈", 0.01, "robust ≈: within ±1 point"),
    "trades_clean": Effect(">=", 0.005, "clean ↑: decided against +0.5 point"),
    "curriculum": Effect("≈", 0.01, "≈ PGD-AT: within ±1 point"),
    "ppo": Effect("≈", 0.01, "≈ LAS-AT: within ±1 point"),
}


def claim_co(runs: Runs, p: dict[str, Any]) -> list[Row]:
    """FGSM-RS collapses in the CO setting; the methods built against CO do not."""
    return co_rows(runs, CO_ARMS, "co", "fgsm_rs", p["robust"]["co"],
                   p.get("curve", {}).get("co", ("clean", "fgsm", "pgd10")))


def claim_sparse(runs: Runs, p: dict[str, Any]) -> list[Row]:
    """1-step sAT collapses (Fast-LS-ℓ0's central claim); Fast-LS-ℓ0 does not."""
    return co_rows(runs, ("sat_1step", "fast_ls_l0"), "sparse", "sat_1step",
                   p["robust"]["sparse"], p.get("curve", {}).get("sparse",
                                                                 ("clean", "fgsm", "pgd10")))


def claim_dynamic(runs: Runs, p: dict[str, Any]) -> list[Row]:
    row = pair_row(runs, "Dynamic AT ≥ PGD-AT in robust accuracy at lower attack cost",
                   "dynamic", "pgd_at", "standard", EFFECTS["dynamic"], p["robust"]["standard"])
    return [cheaper(row, runs, "dynamic", "pgd_at")]


def claim_las_at(runs: Runs, p: dict[str, Any]) -> list[Row]:
    name = p["robust"]["standard"]
    steps = [r["strategy"][-1].get("steps_mean", float("nan"))
             for r in runs.get(("las_at", "standard"), []) if r["strategy"]]
    k = f"{mean_std(steps)[0]:.2f}" if steps else "?"
    fixed = [o for o in p.get("method_overrides", {}).get("pgd_at_kmean", ())
             if o.startswith("policy.steps=")] or ["policy.steps=5"]
    rows = [pair_row(runs, "LAS-AT ≥ PGD-AT at equal mean K", "las_at", "pgd_at_kmean",
                     "standard", EFFECTS["las_at"], name,
                     f" (PGD-AT K = {fixed[-1].split('=')[1]}, the mean of LAS-AT's K grid "
                     f"rounded up; LAS-AT's last-epoch mean K {k}; the look-ahead's extra cost "
                     "shows in CPU s only)")]
    if ("ppo", "standard") in runs:
        rows.append(pair_row(runs, "PPO on the same action space and reward ≈ LAS-AT", "ppo",
                             "las_at", "standard", EFFECTS["ppo"], name))
    return rows


def claim_learns(runs: Runs, p: dict[str, Any]) -> list[Row]:
    """The strategy distribution departs measurably from uniform (entropy drop ≥ 0.1 nats)."""
    rs = runs[("las_at", "standard")]
    first = [r["strategy"][0]["policy/entropy"] for r in rs]
    last = [r["strategy"][-1]["policy/entropy"] for r in rs]
    drop = [a - b for a, b in zip(first, last)]
    eps = [r["strategy"][-1].get("eps_mean", float("nan")) for r in rs]
    steps = [r["strategy"][-1].get("steps_mean", float("nan")) for r in rs]
    n_up = sum(e > r["strategy"][0].get("eps_mean", e) for e, r in zip(eps, rs))
    measured = (f"entropy {mean_std(first)[0]:.3f} (epoch 1) → {pm(last, 1.0, 3)} nats (last); "
                f"drop {pm(drop, 1.0, 3)}; last-epoch mean ε {pm(eps, 1.0, 3)}, "
                f"mean K {pm(steps, 1.0, 2)}; ε mean rose in {n_up}/{len(rs)} seeds")
    ok = min(drop) >= 0.1
    return [Row("the learned LAS-AT strategy departs from uniform (entropy drop ≥ 0.1 nats in "
                "every seed)", "standard", measured, "holds" if ok else "does not hold")]


def claim_curriculum(runs: Runs, p: dict[str, Any]) -> list[Row]:
    row = pair_row(runs, "curriculum AT ≈ PGD-AT robustness at lower attack cost", "curriculum",
                   "pgd_at", "standard", EFFECTS["curriculum"], p["robust"]["standard"])
    return [cheaper(row, runs, "curriculum", "pgd_at")]


def claim_trades(runs: Runs, p: dict[str, Any]) -> list[Row]:
    from benchmarks.fidelity_claims import _by_seed, decide, diff_text, paired

    row = pair_row(runs, "TRADES vs PGD-AT: clean ↑, robust ≈", "trades", "pgd_at", "standard",
                   EFFECTS["trades_robust"], p["robust"]["standard"])
    cln = paired(_by_seed(runs, "trades", "standard", "clean"),
                 _by_seed(runs, "pgd_at", "standard", "clean"))
    clean_verdict = decide(cln[0], cln[2], EFFECTS["trades_clean"])
    verdict = f"clean ↑: {clean_verdict}; robust ≈: {row.verdict}"
    measured = (f"{row.measured}; clean ↑ against +0.5 point: Δ {diff_text(*cln[:3])}")
    return [Row(row.claim, row.setting, measured, verdict, row.minutes)]


#: claim key -> (rows builder, the (method, setting) arms it needs).
CLAIMS: dict[str, tuple[Callable[[Runs, dict[str, Any]], list[Row]],
                        Callable[[], list[tuple[str, str]]]]] = {
    "co": (claim_co, lambda: [(m, "co") for m in CO_ARMS]),
    "sparse": (claim_sparse, lambda: [("sat_1step", "sparse"), ("fast_ls_l0", "sparse")]),
    "dynamic": (claim_dynamic, lambda: [("dynamic", "standard"), ("pgd_at", "standard")]),
    "las_at": (claim_las_at, lambda: [("las_at", "standard"), ("pgd_at_kmean", "standard"),
                                      ("ppo", "standard")]),
    "learns": (claim_learns, lambda: [("las_at", "standard")]),
    "curriculum": (claim_curriculum, lambda: [("curriculum", "standard"),
                                              ("pgd_at", "standard")]),
    "trades": (claim_trades, lambda: [("trades", "standard"), ("pgd_at", "standard")]),
}

#: arms a tier skips (PPO costs a second learner; its claim is the digits tier's).
SKIPPED: dict[str, set[tuple[str, str]]] = {"mnist": {("ppo", "standard")}}


def tier_claims(preset: str) -> list[str]:
    """The claims whose settings the tier has."""
    settings = PRESETS[preset]["settings"]
    return [c for c, (_, arms) in CLAIMS.items() if all(s in settings for _, s in arms())]


def rows_of(runs: Runs, claims: list[str], preset: str) -> list[Row]:
    """The rows of the claims all of whose (non-optional) arms have runs."""
    p = PRESETS[preset]
    done = [c for c in claims if all(arm in runs for arm in CLAIMS[c][1]()
                                     if arm[0] != "ppo")]
    rows = [row for c in done for row in CLAIMS[c][0](runs, p)]
    if p["check"]:
        rows += check_rows(runs, p["robust"]["standard"])
    return rows


# -- running and resuming -----------------------------------------------------------------------
def _load(path: str | None, preset: str) -> list[dict[str, Any]]:
    """The finished runs of a results file of this tier (none when it does not exist)."""
    if not path or not Path(path).exists():
        return []
    with open(path) as f:
        saved = json.load(f)
    if saved.get("preset") != preset:
        raise SystemExit(f"{path} holds runs of --{saved.get('preset')}, not --{preset}: "
                         "give another --out")
    return list(saved["runs"])


def _save(path: str | None, preset: str, runs: list[dict[str, Any]], extra: dict[str, Any]
          ) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"preset": preset, **extra, "runs": runs}, f, indent=1)
    os.replace(tmp, path)  # atomic: an interruption keeps the previous file


def _group(records: list[dict[str, Any]]) -> Runs:
    runs: Runs = {}
    for r in records:
        runs.setdefault((r["method"], r["setting"]), []).append(r)
    for rs in runs.values():
        rs.sort(key=lambda r: r["seed"])
    return runs


def _results(jobs: list[tuple[str, str, int]], workers: int, preset: str,
             data_root: str | None, epochs: int | None) -> Iterator[dict[str, Any]]:
    """Each job's result as it finishes: in this process with one worker, else in a pool."""
    if workers <= 1:
        for m, s, seed in jobs:
            yield run_one(m, s, seed, preset, data_root, epochs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_one, m, s, seed, preset, data_root, epochs)
                   for m, s, seed in jobs]
        for f in as_completed(futures):
            yield f.result()


def report(path: str) -> int:
    """Print the table and the strategy statistics of a results file written by ``--out``."""
    with open(path) as f:
        saved = json.load(f)
    runs = _group(saved["runs"])
    print(format_table(rows_of(runs, tier_claims(saved["preset"]), saved["preset"])))
    strategy = format_strategy(runs)
    if strategy:
        print("\nLAS-AT strategy by epoch (mean over seeds):\n\n" + strategy)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="digits, CPU (the default)")
    mode.add_argument("--mnist", action="store_true", help="full MNIST, CPU, a few hours")
    mode.add_argument("--full", action="store_true", help="CIFAR-10, the papers' settings")
    parser.add_argument("--data-root", default=None, help="folder of the data sets "
                        "(--mnist, --full; default ../shared/data)")
    parser.add_argument("--claims", default=None, help="comma-separated claims (default: all "
                        "the tier has)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every setting")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=None, help="results JSON: written after every run; "
                        "the runs already in it are skipped")
    parser.add_argument("--report", default=None,
                        help="print the table of a JSON written by --out (no training)")
    args = parser.parse_args(argv)
    if args.report:
        return report(args.report)
    preset = "full" if args.full else "mnist" if args.mnist else "quick"
    p = PRESETS[preset]
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else p["seeds"]
    claims = ([c.strip() for c in args.claims.split(",") if c.strip()] if args.claims
              else tier_claims(preset))
    unknown = [c for c in claims if c not in tier_claims(preset)]
    if unknown:
        parser.error(f"claims {unknown} are not in --{preset}; valid: "
                     f"{', '.join(tier_claims(preset))}")
    data_root = args.data_root or p["data_root"]
    arms = [arm for c in claims for arm in CLAIMS[c][1]() if arm not in SKIPPED.get(preset, set())]
    arms = list(dict.fromkeys(arms))  # claim order, each arm once
    finished = _load(args.out, preset)
    have = {(r["method"], r["setting"], r["seed"]) for r in finished}
    jobs = [(m, s, seed) for m, s in arms for seed in seeds if (m, s, seed) not in have]
    workers = args.workers or p["workers"]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    print(f"fidelity --{preset}: {len(jobs)} runs to do ({len(have)} already in {args.out}), "
          f"{workers} workers, load {load0[0]:.1f}", flush=True)
    records = list(finished)
    extra = {"started_load": load0[0]}
    for i, r in enumerate(_results(jobs, workers, preset, data_root, args.epochs), 1):
        records.append(r)
        _save(args.out, preset, records, extra)
        print(f"[{i}/{len(jobs)} {time.perf_counter() - t0:.0f}s] {r['method']} "
              f"{r['setting']} seed {r['seed']}: clean {pct(r['clean'])} robust "
              f"{pct(r['robust'])} ({r['wall_s']:.0f}s, load {r['load']:.1f})", flush=True)
    runs = _group(records)
    rows = rows_of(runs, claims, preset)
    elapsed = time.perf_counter() - t0
    load1 = os.getloadavg()
    print(f"\n## fidelity --{preset}: {elapsed / 60:.1f} min, load average {load0[0]:.1f} → "
          f"{load1[0]:.1f} (15-min {load1[2]:.1f}), {workers} workers × 1 thread, seeds "
          f"{list(seeds)}, epochs {args.epochs or p['epochs']}, robust = {p['robust']}\n")
    print(format_table(rows))
    strategy = format_strategy(runs)
    if strategy:
        print("\nLAS-AT strategy by epoch (mean over seeds):\n\n" + strategy)
    _save(args.out, preset, records, {**extra, "rows": [vars(r) for r in rows]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
