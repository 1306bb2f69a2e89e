"""Measure a data set's c_max preset for the dynamic policy: first-epoch FOSC after step 1.

Rule (agents/dynamic.py ``C_MAX_PRESETS``): train one epoch of full-K PGD-AT (the dynamic
policy with c_max = 0, so no sample stops) from a fresh target, record every sample's FOSC
(natural reference point) after its first PGD step, and take the median over the epoch.

    python -m benchmarks.fosc_preset --data mnist --root /work/shared/data [--quick]

Measured (CPU, seed 0, batch 128, K = 10, α = ε/4, random start, preset target/eps/lr/optimiser):
    digits  linf ε=0.2  (all 1,408 train samples in full batches, digits_cnn):
        p10 0.0183, median 0.0250, p90 0.0366   -> 0.025
    mnist   linf ε=0.3  (first 6,000 train samples, mnist_cnn):
        p10 0.189,  median 0.306,  p90 0.694    -> 0.3
The values depend on how fast the target's input gradients grow during the first epoch (a
fresh network has small ones), hence on the model, the learning rate and the batch size.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.loop import make_run, train_epoch


def first_epoch_fosc(overrides: list[str]) -> torch.Tensor:
    """FOSC after step 1 of every training sample over the first epoch of a fresh run (N,)."""
    run = make_run([*overrides, "policy=dynamic", "policy.c_max=0", "progress=false"])
    seen: list[torch.Tensor] = []
    act = run.policy.act

    def recording_act(obs, t, generator):
        if t == 1:
            seen.append(obs["fosc"].detach().clone())
        return act(obs, t, generator)

    run.policy.act = recording_act  # type: ignore[method-assign]
    train_epoch(run, 0)
    return torch.cat(seen).cpu()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--root", default=None)
    parser.add_argument("--norm", default="linf")
    parser.add_argument("--train-subset", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="digits only (< 1 min)")
    args = parser.parse_args(argv)
    overrides = [f"data={args.data}", f"threat={args.norm}", f"batch_size={args.batch_size}",
                 f"data.train_subset={args.train_subset}", "data.test_subset=64", "device=cpu"]
    if args.root:
        overrides.append(f"data.root={args.root}")
    if args.quick:
        overrides = ["data=digits", f"threat={args.norm}", "device=cpu"]
    torch.set_num_threads(2)
    fosc = first_epoch_fosc(overrides)
    q = torch.quantile(fosc.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.double))
    print(f"{' '.join(overrides)}: n={fosc.numel()} first-epoch FOSC after step 1: "
          f"p10={q[0]:.4g} median={q[1]:.4g} p90={q[2]:.4g}  -> c_max preset = {q[1]:.3g}")


if __name__ == "__main__":
    main()
