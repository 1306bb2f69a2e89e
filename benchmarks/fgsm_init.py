"""FGSM-RS vs FGSM-SDI vs FGSM-PGI (mep): speed ratios and catastrophic overfitting on CIFAR-10.

Usage::

    python -m benchmarks.fgsm_init --data-root ../shared/data            # full mode
    python -m benchmarks.fgsm_init --data-root ../shared/data --quick    # < 1 min
    python -m benchmarks.fgsm_init --quick --data digits                 # no files needed

Two parts, both interleaving the compared methods so that load from other processes hits all
of them alike (timings on shared CPUs are noisy; only ratios within one run are reported):

1. **speed** — ``--speed-rounds`` rounds; in each, every method trains on one batch
   (``runners.train.train_step``: attack, target step, policy update); reported: median time
   per batch relative to ``fgsm_rs``. SDI's generator update every k = 20 batches is
   amortised by timing k consecutive batches per round when ``--speed-k`` is 20.
2. **co** — for each ε, the methods train epoch by epoch in turn (constant LR, ``cifar_cnn``);
   after each epoch: test PGD-10 accuracy and the CO monitor's flag (runners/co_monitor.py),
   and the epoch's training time relative to ``fgsm_rs``'s same epoch.

Writes a markdown table to stdout and, with ``--out``, a JSON file.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.interleaved import epoch_rows, make_trainer, speed_part

METHODS = {
    "fgsm_rs": ["policy=fgsm_rs"],
    "fgsm_sdi": ["policy=fgsm_sdi"],
    "fgsm_pgi": ["policy=fgsm_pgi", "policy.prior=mep", "at_loss=pgi"],
}
SPEED_EXTRA = {  # variants timed in the speed part only
    "fgsm_pgi (reg, prior_grad=false)": ["policy=fgsm_pgi", "at_loss=pgi",
                                         "at_loss.prior_grad=false"],
    "fgsm_pgi (no reg)": ["policy=fgsm_pgi"],
    "fgsm_sdi (grad_input=previous)": ["policy=fgsm_sdi", "policy.grad_input=previous"],
}


def co_run(base: list[str], eps: float, epochs: int) -> list[dict[str, float]]:
    """Per-epoch test PGD-10 accuracy, CO flag and epoch-time ratio for each method."""
    b = [*base, f"threat.eps={eps}", f"epochs={epochs}"]
    trainers = {name: make_trainer(b, m) for name, m in METHODS.items()}
    return epoch_rows(trainers, epochs, "fgsm_rs", f"eps={eps * 255:.0f}/255",
                      lambda train: {"attack_success": float(train["policy/attack_success"])})


def table(eps: float, rows: list[dict[str, float]]) -> str:
    """Markdown: per epoch, test PGD-10 (CO flag) and time ratio for each method."""
    head = "| ε | epoch | " + " | ".join(
        f"{m} PGD-10 / FGSM / CO / time×" for m in METHODS) + " |"
    lines = [head, "|" + "---|" * (2 + len(METHODS))]
    for r in rows:
        cells = [f"{r[f'{m}/test_pgd_acc']:.3f} / {r[f'{m}/test_fgsm_acc']:.3f} / "
                 f"{int(r[f'{m}/co'])} / {r[f'{m}/time_ratio']:.2f}" for m in METHODS]
        lines.append(f"| {eps * 255:.0f}/255 | {int(r['epoch'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, < 1 min")
    p.add_argument("--data", default="cifar10")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--target", default="cifar_cnn")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train-subset", type=int, default=1024)
    p.add_argument("--test-subset", type=int, default=128)
    p.add_argument("--monitor-train", type=int, default=None,
                   help="training samples for monitor/train_pgd_acc (default: --test-subset)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eps", type=float, nargs="+", default=[8.0, 16.0], help="in 1/255")
    p.add_argument("--speed-rounds", type=int, default=5)
    p.add_argument("--speed-k", type=int, default=4)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-co", action="store_true")
    p.add_argument("--out", default=None, help="JSON file for the results")
    a = p.parse_args(argv)
    if a.quick:
        a.epochs, a.train_subset, a.test_subset = 2, 128, 32
        a.speed_rounds, a.speed_k, a.batch_size = 1, 1, 32
        if a.data == "cifar10":
            a.eps = a.eps[:1]
    torch.manual_seed(0)
    n = a.test_subset
    base = [f"data={a.data}", f"batch_size={a.batch_size}", "progress=false", "device=cpu",
            f"data.train_subset={a.train_subset}", f"data.test_subset={n}",
            f"eval.test_subset={n}", f"monitor.test_subset={n}",
            f"monitor.train_subset={a.monitor_train or n}",
            "optim.schedule=constant", "checkpoint_dir=/tmp/fgsm_init_bench"]
    if a.data != "digits":
        base += [f"data.root={a.data_root}", f"target={a.target}"]
    print(f"conditions: torch threads={torch.get_num_threads()}, data={a.data}, "
          f"target={a.target if a.data != 'digits' else 'auto'}, train_subset={a.train_subset}, "
          f"test_subset={n}, monitor_train={a.monitor_train or n}, batch={a.batch_size}, epochs={a.epochs}, eps={a.eps}/255",
          flush=True)
    results: dict[str, object] = {"args": vars(a)}
    if not a.skip_speed:
        results["speed"] = speed_part(base, {**METHODS, **SPEED_EXTRA}, a.speed_rounds,
                                      a.speed_k, "fgsm_rs")
    if not a.skip_co:
        for e in a.eps:
            rows = co_run(base, e / 255, a.epochs)
            results[f"co_eps{e:g}"] = rows
            print("\n" + table(e / 255, rows) + "\n", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
