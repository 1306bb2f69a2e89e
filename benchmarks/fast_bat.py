"""Fast-BAT vs FGSM-RS vs FGSM-AT on CIFAR-10: cost ratio and robustness per epoch, at 8 and 16/255.

Usage::

    python -m benchmarks.fast_bat --data-root ../shared/data             # full mode
    python -m benchmarks.fast_bat --data-root ../shared/data --quick     # a few minutes
    python -m benchmarks.fast_bat --quick --data digits                  # no files needed

The full mode costs about 10 CPU-minutes with one torch thread (its default): about 15 min of
wall time on an idle 2-core machine, an hour or more under heavy load (other processes' load
does not change the CPU-time ratios). Its training part is far too short for CIFAR-10 models to
learn much; it checks that the methods train side by side and measures per-epoch cost, not
robustness (the paper's setting is ``recipe=fast_bat_cifar10``, for a GPU).

Methods (no GradAlign anywhere): ``fast_bat`` = ``policy=fgsm_rs at_loss=fast_bat`` (the
reference's uniform start, raw step 5000/255 at ε ≤ 8/255 and 2000/255 above, λ = 10, implicit
gradient at z); ``fgsm_rs`` = uniform start + one sign step of 1.25ε (Wong et al., the paper's
"Fast-AT"); ``fgsm_at`` = one sign step of ε from the clean point.

Two parts, both interleaving the methods so that load from other processes hits all of them
alike (timings on shared CPUs are noisy; only ratios within one run are reported):

1. **speed** — ``--speed-rounds`` rounds; in each, every method (plus three Fast-BAT variants:
   the implicit derivative at δ*, no implicit term, the pass at z in train-mode BatchNorm as
   in the reference) trains ``--speed-k`` batches
   (``runners.train.train_step``); reported: median time per batch relative to ``fgsm_rs``, in
   wall time and in CPU time (the work itself, robust to other processes' load).
2. **training** — for each ε and seed, the methods train epoch by epoch in turn (``cifar_cnn``,
   cyclic lr 0 → ``--lr`` → 0 with the peak at the middle, as the paper's recipe); after each
   epoch: test PGD-10 and FGSM accuracy on a fixed test subset, the CO monitor's flag
   (runners/co_monitor.py), the epoch's time relative to ``fgsm_rs``'s same epoch, and
   Fast-BAT's implicit-term norm and H's active fraction. With ``--final-test n``, clean and
   PGD-20 accuracy on n test samples at the end. Tables give mean ± std over seeds.

Writes markdown tables to stdout and, with ``--out``, a JSON file.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from benchmarks.interleaved import epoch_rows, make_trainer, speed_part
from learned_at.runners.robustness import evaluate

METHODS = {
    "fast_bat": ["policy=fgsm_rs", "at_loss=fast_bat"],
    "fgsm_rs": ["policy=fgsm_rs"],
    "fgsm_at": ["policy=fgsm_at"],
}
SPEED_EXTRA = {  # variants timed in the speed part only
    "fast_bat (ig_point=delta_star)": [*METHODS["fast_bat"], "at_loss.ig_point=delta_star"],
    "fast_bat (implicit=false)": [*METHODS["fast_bat"], "at_loss.implicit=false"],
    "fast_bat (lower_bn=train)": [*METHODS["fast_bat"], "at_loss.lower_bn=train"],
}


def train_run(base: list[str], eps: float, epochs: int, seed: int, final_test: int
              ) -> dict[str, object]:
    """One seed at one ε: per-epoch rows of every method, and (``final_test`` > 0) clean and
    PGD-20 accuracy on that many test samples at the end."""
    b = [*base, f"threat.eps={eps}", f"epochs={epochs}", f"seed={seed}"]
    trainers = {name: make_trainer(b, m) for name, m in METHODS.items()}
    parts = ("implicit_norm", "upper_grad_norm", "h_active_fraction")
    rows = epoch_rows(trainers, epochs, "fgsm_rs", f"eps={eps * 255:.0f}/255 seed={seed}",
                      lambda train: {k: float(train[f"train/{k}"]) for k in parts
                                     if f"train/{k}" in train})
    final = {}
    for name, t in trainers.items() if final_test > 0 else ():
        run = t.run
        n = min(final_test, len(run.test.y))
        res = evaluate(run.target.model, run.test.x[:n], run.test.y[:n], ["clean", "pgd20"],
                       run.geometry, eps, run.config.eval.batch_size,
                       torch.Generator(device=run.device).manual_seed(seed))
        final[name] = {"clean": res["clean"]["acc"], "pgd20": res["pgd20"]["acc"]}
    return {"rows": rows, "final": final}


def _ms(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± std' of values × scale (std over seeds; 0 with one seed)."""
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def epoch_table(eps: float, runs: list[dict[str, object]]) -> str:
    """Markdown: per epoch, test PGD-10 accuracy (%) mean ± std over seeds, CO count, time×."""
    head = "| ε | epoch | " + " | ".join(f"{m} PGD-10 % (CO) / time×" for m in METHODS) + \
        " | fast_bat ‖implicit‖/‖∇θℓ‖, H active |"
    lines = [head, "|" + "---|" * (3 + len(METHODS))]
    for i in range(len(runs[0]["rows"])):  # type: ignore[arg-type]
        rows = [r["rows"][i] for r in runs]  # type: ignore[index]
        cells = []
        for m in METHODS:
            co = int(sum(r[f"{m}/co"] for r in rows))
            ratio = statistics.fmean(r[f"{m}/time_ratio"] for r in rows)
            cells.append(f"{_ms([r[f'{m}/test_pgd_acc'] for r in rows])} ({co}) / {ratio:.2f}")
        rel = statistics.fmean(r["fast_bat/implicit_norm"] / max(r["fast_bat/upper_grad_norm"],
                                                                 1e-12) for r in rows)
        active = statistics.fmean(r["fast_bat/h_active_fraction"] for r in rows)
        lines.append(f"| {eps * 255:.0f}/255 | {i + 1} | " + " | ".join(cells) +
                     f" | {rel:.3g}, {active:.2f} |")
    return "\n".join(lines)


def final_table(eps: float, runs: list[dict[str, object]]) -> str:
    """Markdown: last-epoch clean and PGD-10 accuracy (%) mean ± std over seeds (and the final
    PGD-20 when measured), epochs flagged CO over all seeds, mean epoch-time ratio."""
    measured = bool(runs[0]["final"])
    head = "| ε | method | clean % | PGD-10 % | " + ("PGD-20 % (final set) | " if measured
                                                      else "") + "CO epochs | time / fgsm_rs |"
    lines = [head, "|---" * (6 + measured) + "|"]
    for m in METHODS:
        last = [r["rows"][-1] for r in runs]  # type: ignore[index]
        rows = [row for r in runs for row in r["rows"]]  # type: ignore[union-attr]
        cells = [_ms([row[f"{m}/test_clean_acc"] for row in last]),
                 _ms([row[f"{m}/test_pgd_acc"] for row in last])]
        if measured:
            cells.append(_ms([r["final"][m]["pgd20"] for r in runs]))  # type: ignore[index]
        cells += [str(int(sum(row[f"{m}/co"] for row in rows))),
                  f"{statistics.fmean(row[f'{m}/time_ratio'] for row in rows):.2f}"]
        lines.append(f"| {eps * 255:.0f}/255 | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write(path: str | None, results: dict[str, object]) -> None:
    """Write the results so far as JSON (after each ε, so a cut run keeps what it measured)."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few minutes")
    p.add_argument("--data", default="cifar10")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--target", default="cifar_cnn")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--train-subset", type=int, default=256)
    p.add_argument("--test-subset", type=int, default=64, help="per-epoch PGD-10 / FGSM")
    p.add_argument("--clean-subset", type=int, default=128, help="per-epoch clean accuracy")
    p.add_argument("--monitor-train", type=int, default=8,
                   help="training samples of the CO monitor's train PGD-10")
    p.add_argument("--final-test", type=int, default=0, help="final clean / PGD-20 (0: none)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.2, help="peak of the cyclic schedule")
    p.add_argument("--eps", type=float, nargs="+", default=[8.0, 16.0], help="in 1/255")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--speed-rounds", type=int, default=6)
    p.add_argument("--speed-k", type=int, default=1)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--out", default=None, help="JSON file for the results")
    a = p.parse_args(argv)
    if a.quick:
        a.epochs, a.train_subset, a.test_subset, a.clean_subset = 2, 128, 32, 64
        a.speed_rounds, a.batch_size, a.seeds, a.eps = 1, 32, [0], a.eps[:1]
    torch.set_num_threads(a.threads)
    n = a.test_subset
    base = [f"data={a.data}", f"batch_size={a.batch_size}", "progress=false", f"device={a.device}",
            f"data.train_subset={a.train_subset}", f"data.test_subset={a.clean_subset}",
            f"eval.test_subset={n}", f"monitor.test_subset={n}",
            f"monitor.train_subset={a.monitor_train}", f"optim.lr={a.lr}",
            "optim.schedule=cyclic", "optim.cyclic_peak=0.5", "checkpoint_dir=/tmp/fast_bat_bench"]
    if a.data != "digits":
        base += [f"data.root={a.data_root}", f"target={a.target}"]
    print(f"conditions: torch threads={torch.get_num_threads()}, data={a.data}, "
          f"target={a.target if a.data != 'digits' else 'auto'}, train_subset={a.train_subset}, "
          f"PGD/FGSM test subset={n}, clean subset={a.clean_subset}, batch={a.batch_size}, "
          f"epochs={a.epochs}, cyclic lr peak {a.lr}, seeds={a.seeds}, eps={a.eps}/255, "
          f"device={a.device}",
          flush=True)
    results: dict[str, object] = {"args": vars(a)}
    if not a.skip_speed:
        results["speed"] = speed_part(base, {**METHODS, **SPEED_EXTRA}, a.speed_rounds,
                                      a.speed_k, "fgsm_rs")
        _write(a.out, results)
    if not a.skip_training:
        for e in a.eps:
            runs = [train_run(base, e / 255, a.epochs, s, a.final_test) for s in a.seeds]
            results[f"eps{e:g}"] = runs
            print("\n" + epoch_table(e / 255, runs) + "\n\n" + final_table(e / 255, runs) + "\n",
                  flush=True)
            _write(a.out, results)
    _write(a.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
