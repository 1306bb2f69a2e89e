"""The claims of :mod:`benchmarks.fidelity`: statistics, verdicts and the table.

Every claim compares arms by seed (the same seed, data order and test images for both arms) and
decides at the tier's resolution:

* a claim "A ≥ B" *holds* when the paired difference's 95 % t-interval lies above 0, *does not
  hold* when it lies below the paper's effect (the interval excludes the effect the paper
  reports), and is *below this tier's resolution* when it contains both 0 and the effect;
* a claim "A ≈ B" *holds* when the interval lies inside ±margin, *does not hold* when it
  excludes 0, and is below the resolution otherwise.

Each row prints the interval, the paper's effect, the seeds the measured spread would need for
an interval narrower than the effect, and, where per-example masks are stored, the part of the
spread that comes from sampling the test images (so that a larger test set is not mistaken for
the cure of a seed-to-seed spread).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Runs = dict[tuple[str, str], list[dict[str, Any]]]


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    claim: str
    setting: str
    measured: str
    verdict: str
    minutes: float = 0.0  # the wall time of the claim's runs, summed (process minutes)


@dataclass(frozen=True)
class Effect:
    """What a comparison claims and the size the tier must resolve.

    Attributes:
        kind: ">=" (A better than B by ``size``) or "≈" (|A − B| < ``size``).
        size: the paper's effect (">="), or the equivalence margin ("≈"), in accuracy units.
        source: where the size comes from (printed with the row).
    """

    kind: str
    size: float
    source: str


# -- statistics ---------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, float, int]:
    """Mean, std and 95 % t half-width of the per-seed differences a − b; number of pairs."""
    from learned_at.runners.aggregate import paired_difference

    d = paired_difference(a, b)
    return (d.mean or 0.0, d.std or 0.0, d.ci95 if d.ci95 is not None else math.inf, d.n)


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (df ≥ 1)."""
    from learned_at.runners.aggregate import t_quantile_975

    return t_quantile_975(df)


def seeds_needed(std: float, width: float, cap: int = 200) -> int | None:
    """Fewest seeds n ≥ 2 with t(n−1)·std/√n < width (None beyond ``cap``)."""
    if std == 0:
        return 2
    for n in range(2, cap + 1):
        if t975(n - 1) * std / math.sqrt(n) < width:
            return n
    return None


def paired_sampling_se(mask_a: str, mask_b: str) -> float:
    """Standard error of the difference of two accuracies measured on the *same* test images
    (per-example masks as '0'/'1' strings): √(n₀₁ + n₁₀ − (n₀₁ − n₁₀)²/n) / n."""
    n = len(mask_a)
    n01 = sum(1 for p, q in zip(mask_a, mask_b) if p == "0" and q == "1")
    n10 = sum(1 for p, q in zip(mask_a, mask_b) if p == "1" and q == "0")
    return math.sqrt(max(n01 + n10 - (n01 - n10) ** 2 / n, 0.0)) / n


def decide(mean: float, ci: float, effect: Effect) -> str:
    """The verdict of a paired difference ``mean`` ± ``ci`` (module docstring)."""
    lo, hi = mean - ci, mean + ci
    if effect.kind == ">=":
        if lo > 0:
            return "holds"
        if hi < effect.size:
            return (f"does not hold (the interval excludes the paper's +{100 * effect.size:.2f}"
                    + ("; the arms differ the other way" if hi < 0 else "") + ")")
        return "below this tier's resolution"
    if -effect.size < lo and hi < effect.size:
        return "holds"
    if lo > 0 or hi < 0:
        return "does not hold (the arms differ)"
    return "below this tier's resolution"


# -- formatting -----------------------------------------------------------------------------
def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def pm(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    m, s = mean_std(values)
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def diff_text(mean: float, std: float, ci: float) -> str:
    """"Δ ± std [lo, hi]" in points."""
    lo, hi = 100 * (mean - ci), 100 * (mean + ci)
    return f"{100 * mean:+.2f} ± {100 * std:.2f} [{lo:+.2f}, {hi:+.2f}]"


def _by_seed(runs: Runs, method: str, setting: str, key: str) -> dict[int, float]:
    return {r["seed"]: r[key] for r in runs.get((method, setting), [])}


def _minutes(runs: Runs, arms: Sequence[tuple[str, str]]) -> float:
    return sum(r["wall_s"] for arm in set(arms) for r in runs.get(arm, [])) / 60


def _cost(runs: Runs, method: str, setting: str) -> str:
    rs = runs[(method, setting)]
    return (f"{statistics.fmean(r['attack_passes'] for r in rs):.1f} passes, "
            f"{statistics.fmean(r['cpu_s_per_epoch'] for r in rs):.0f} CPU s/epoch")


def _sampling_note(runs: Runs, a: str, b: str, setting: str) -> str:
    """The mean per-seed test-sampling SE of the robust Δ, when both arms stored masks."""
    ra = {r["seed"]: r.get("robust_mask") for r in runs[(a, setting)]}
    rb = {r["seed"]: r.get("robust_mask") for r in runs[(b, setting)]}
    ses = [paired_sampling_se(ra[s], rb[s]) for s in ra if ra[s] and rb.get(s)]
    if not ses:
        return ""
    n = len(next(m for m in ra.values() if m))
    return f"; test-sampling SE of Δ per seed {100 * statistics.fmean(ses):.2f} (n = {n})"


# -- rows -----------------------------------------------------------------------------------
def collapsed(r: dict[str, Any]) -> bool:
    """CO in a run: it ends collapsed — final multi-step accuracy (PGD-10) below half of its
    best epoch (a best of at least 10 %) while single-step accuracy (FGSM) stays at least 10
    points above it — or it never becomes robust to the multi-step attack although robust to
    the single step (final multi-step < 5 %, single-step ≥ 20 %)."""
    if not r["per_epoch"]:
        return False
    best = max(e[2] for e in r["per_epoch"])
    _, fgsm, pgd = r["per_epoch"][-1]
    ends_collapsed = best >= 0.1 and pgd < 0.5 * best and fgsm >= pgd + 0.1
    never_robust = pgd < 0.05 and fgsm >= 0.2
    return ends_collapsed or never_robust


def did_not_train(r: dict[str, Any], classes: int = 10) -> bool:
    """A run whose final clean accuracy is within 10 points of chance (a constant or
    near-constant classifier): "no collapse" says nothing about such a run."""
    return r["clean"] < 1.0 / classes + 0.1


def co_rows(runs: Runs, arms: Sequence[str], setting: str, collapsing: str,
            robust_name: str, curve: Sequence[str] = ("clean", "fgsm", "pgd10")) -> list[Row]:
    """``collapsing`` overfits catastrophically in most seeds; every other arm in none. The
    curves are per epoch (clean, single-step, multi-step) under the attacks ``curve``."""
    rows = []
    for m in arms:
        if (m, setting) not in runs:
            continue
        rs = runs[(m, setting)]
        n_co = sum(collapsed(r) for r in rs)
        n_dead = sum(did_not_train(r) for r in rs)
        best = [max(e[2] for e in r["per_epoch"]) for r in rs]
        final = [r["per_epoch"][-1][2] for r in rs]
        fgsm = [r["per_epoch"][-1][1] for r in rs]
        flagged = sorted({e + 1 for r in rs for e in r["co_epochs"]})
        measured = (f"CO in {n_co}/{len(rs)} seeds; {curve[2]} best epoch {pm(best)} → final "
                    f"{pm(final)}, final {curve[1]} {pm(fgsm)}; clean "
                    f"{pm([r['clean'] for r in rs])}, "
                    f"{robust_name} {pm([r['robust'] for r in rs])}; epochs the CO monitor "
                    f"flags: {flagged or 'none'}")
        if n_dead:
            measured += (f"; did not train (clean within 10 points of chance) in "
                         f"{n_dead}/{len(rs)} seeds")
        if m == collapsing:
            claim, ok = f"{m} overfits catastrophically (most seeds)", n_co * 2 > len(rs)
        else:
            claim, ok = f"{m} does not overfit catastrophically (no seed)", n_co == 0
        verdict = "holds" if ok else "does not hold"
        if ok and n_dead and m != collapsing:
            verdict = f"does not hold (did not train in {n_dead}/{len(rs)} seeds)"
        rows.append(Row(claim, setting, measured, verdict, _minutes(runs, [(m, setting)])))
    return rows


def pair_row(runs: Runs, claim: str, a: str, b: str, setting: str, effect: Effect,
             robust_name: str, note: str = "") -> Row:
    """Paired robust comparison of a vs b at the tier's resolution (module docstring)."""
    rob = paired(_by_seed(runs, a, setting, "robust"), _by_seed(runs, b, setting, "robust"))
    cln = paired(_by_seed(runs, a, setting, "clean"), _by_seed(runs, b, setting, "clean"))
    need = seeds_needed(rob[1], effect.size)
    rs_a, rs_b = runs[(a, setting)], runs[(b, setting)]
    measured = (f"{robust_name} {a} {pm([r['robust'] for r in rs_a])} vs {b} "
                f"{pm([r['robust'] for r in rs_b])}: Δ {diff_text(*rob[:3])} (n = {rob[3]} "
                f"seeds); paper/claim: {'+' if effect.kind == '>=' else '±'}"
                f"{100 * effect.size:.2f} ({effect.source}); seeds for an interval narrower "
                f"than that: {need or '> 200'}{_sampling_note(runs, a, b, setting)}; clean Δ "
                f"{diff_text(*cln[:3])}; cost {a} {_cost(runs, a, setting)} vs {b} "
                f"{_cost(runs, b, setting)}{note}")
    return Row(claim, setting, measured, decide(rob[0], rob[2], effect),
               _minutes(runs, [(a, setting), (b, setting)]))


def cheaper(row: Row, runs: Runs, a: str, b: str) -> Row:
    """The row with "; not cheaper" added when arm a's attack costs b's or more."""
    mean = {m: statistics.fmean(r["attack_passes"] for r in runs[(m, row.setting)])
            for m in (a, b)}
    verdict = row.verdict if mean[a] < mean[b] else f"{row.verdict}; not cheaper"
    return Row(row.claim, row.setting, row.measured, verdict, row.minutes)


def check_rows(runs: Runs, robust_name: str) -> list[Row]:
    """How far ``robust_name`` is above the standard AutoAttack where a run measured both."""
    checked = [r for rs in runs.values() for r in rs if r.get("check")]
    if not checked:
        return []
    gaps = [r["check"]["gap"] for r in checked]
    n = checked[0]["check"]["n"]
    arms = ", ".join(sorted({f"{r['method']} s{r['seed']}" for r in checked}))
    measured = (f"{robust_name} − AutoAttack (standard) on the first {n} test images: "
                f"{pm(gaps, 100.0, 2)} points (max {100 * max(gaps):.2f}) over {arms}")
    verdict = "holds" if max(gaps) <= 0.005 else f"gap up to {100 * max(gaps):.2f} points"
    return [Row(f"{robust_name} is as strong as the standard AutoAttack (gap ≤ 0.5 point)",
                "check", measured, verdict)]


def format_table(rows: list[Row]) -> str:
    lines = ["| claim | setting | measured (mean ± std over seeds; Δ paired by seed [95 % "
             "interval], points) | verdict | minutes |", "|---|---|---|---|---:|"]
    lines += [f"| {r.claim} | {r.setting} | {r.measured} | {r.verdict} | {r.minutes:.0f} |"
              for r in rows]
    return "\n".join(lines)


def format_strategy(runs: Runs) -> str:
    """LAS-AT's strategy statistics by epoch (mean over seeds)."""
    rs = runs.get(("las_at", "standard"), [])
    if not rs or not rs[0]["strategy"]:
        return ""
    keys = [k for k in ("policy/entropy", "eps_mean", "alpha_mean", "steps_mean")
            if k in rs[0]["strategy"][0]]
    lines = ["| epoch | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    for e in range(len(rs[0]["strategy"])):
        cells = [f"{statistics.fmean(r['strategy'][e][k] for r in rs):.4g}" for k in keys]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


RowBuilder = Callable[[Runs, dict[str, Any]], list[Row]]
