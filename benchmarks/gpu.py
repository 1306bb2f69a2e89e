"""The GPU fast path: PGD-10 AT on PreAct ResNet-18 / CIFAR-10, learned-policy overheads, bf16.

(a) Speed. Training batches of the co-training loop (``runners.train.train_step``: attack
    episode, AT step, policy update) for PGD-10 AT (``pgd_at``, K = 10, α = 2/255) and the
    learned / adaptive policies ``las_at``, ``fgsm_sdi`` (their CIFAR-10 presets) and
    ``dynamic`` (c_max = 0.5, the paper's CIFAR-10 value), in float32 and with ``perf.bf16``; PGD-10 AT also with ``perf.channels_last``
    and, with ``--compile``, ``perf.compile``. Per configuration: seconds per batch after a
    warm-up, images per second, the epoch time this implies for the 50 000 CIFAR-10 training
    images, the overhead ratio against PGD-10 AT of the same precision, and the bf16 speed-up.
(b) bf16 attacks. A target is trained with PGD-10 AT (float32, and again with bf16), then
    attacked with PGD-10 (α = ε/4, random start) in float32 and under bf16 autocast — the
    same env code path — on the same test images, judged in float32: how much robust accuracy
    a bf16 attack over- or under-states, and what bf16 training does to it.

Real data with ``--data-root`` (the folder holding ``cifar-10-batches-py``); otherwise
synthetic 3×32×32 images with random labels (speed is the same; accuracies mean nothing).

Usage::

    python -m benchmarks.gpu --data-root ../shared/data            # a CUDA machine, < 10 min
    python -m benchmarks.gpu --device cpu --quick                   # the code path, on CPU

``--quick`` is a smoke test of every code path (batch 4, 1 timed batch, cifar_cnn unless
``--model`` is given); its numbers mean nothing. On a CPU without native bf16 (AVX2 only)
bf16 convolutions fall back to torch's slow reference kernels (measured: cifar_cnn, batch 8,
one forward/backward 5.1 s in bf16 against 1.4 s in float32 on a loaded 2-core machine), so the
CPU run checks the bf16 code path, not its speed.

Measured on one NVIDIA H200 (torch 2.11.0+cu130, 16 CPU threads), ``--data-root`` holding a
CIFAR-10 subset (10 000 training and 2 000 test images; the speed rows do not depend on it),
``--train-batches 300``, batch 128, median of 30 timed batches after 5 warm-up batches::

    configuration                       s/batch  images/s  epoch s  vs PGD-10  bf16 speed-up
    pgd_at (PGD-10) fp32                 0.0829    1544.3     32.4      1.00     -
    las_at fp32                          0.1992     642.5     77.8      2.40     -
    fgsm_sdi fp32                        0.0274    4679.2     10.7      0.33     -
    dynamic fp32                         0.0849    1508.4     33.1      1.02     -
    pgd_at (PGD-10) bf16                 0.0790    1620.8     30.8      1.00     1.05
    las_at bf16                          0.2600     492.4    101.6      3.29     0.77
    fgsm_sdi bf16                        0.0267    4794.2     10.4      0.34     1.02
    dynamic bf16                         0.0974    1314.5     38.0      1.23     0.87
    pgd_at (PGD-10) bf16 channels_last   0.0745    1718.5     29.1      0.94     1.11

    trained in  batches  clean %  PGD-10 fp32 attack %  PGD-10 bf16 attack %  difference
    fp32            300    34.25                 21.95                 21.95       +0.00
    bf16            300    35.40                 23.75                 23.75       +0.00

Reading: at batch 128 PreAct ResNet-18 does not fill an H200, so bf16 buys little (1.05×,
1.11× with channels_last) and costs LAS-AT and Dynamic time (their many small per-sample
operations pay autocast's casts): keep ``perf.bf16`` off for them at this size, or raise the
batch. A bf16 attack changes the adversarial examples (23 % of the pixels differ from the fp32
attack's in a CPU check) but not which test images survive: robust accuracy is the same to
the image. torch's CUDA sync detector counts one host sync per PGD-10 AT batch with every
switch on (tests/runners/test_fast_path.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from benchmarks.loop import Stepper, make_run
from learned_at.envs.geometry.linf import Linf
from learned_at.envs.pgd import pgd_attack
from learned_at.targets.datasets import DataSet, DataSplit, load_dataset

CIFAR_TRAIN = 50_000
EPS = 8 / 255


@dataclass(frozen=True)
class Variant:
    """One row of the speed table."""

    label: str
    policy: list[str]
    perf: list[str]
    fp32_label: str  # the same policy's float32 row (for the bf16 speed-up)
    pgd_label: str  # PGD-10 AT's row of the same precision (for the overhead ratio)

    @property
    def bf16(self) -> bool:
        return "perf.bf16=true" in self.perf


def variants(compile_target: bool) -> list[Variant]:
    """PGD-10 AT and the learned policies, fp32 and bf16 (+ layout / compile for PGD-10)."""
    policies = {"pgd_at (PGD-10)": ["policy=pgd_at", "policy.steps=10"],
                "las_at": ["policy=las_at"], "fgsm_sdi": ["policy=fgsm_sdi"],
                "dynamic": ["policy=dynamic", "policy.c_max=0.5"]}
    out = []
    for precision, perf in (("fp32", []), ("bf16", ["perf.bf16=true"])):
        out += [Variant(f"{name} {precision}", p, perf, f"{name} fp32",
                        f"pgd_at (PGD-10) {precision}") for name, p in policies.items()]
    pgd, fast = policies["pgd_at (PGD-10)"], ["perf.bf16=true", "perf.channels_last=true"]
    extra = [("channels_last", fast)]
    if compile_target:
        extra.append(("channels_last compile", [*fast, "perf.compile=true"]))
    for suffix, perf in extra:
        out.append(Variant(f"pgd_at (PGD-10) bf16 {suffix}", pgd, perf, "pgd_at (PGD-10) fp32",
                           "pgd_at (PGD-10) bf16"))
    return out


def synthetic_cifar(n_train: int, n_test: int, seed: int = 0) -> DataSet:
    """Random uint8 3×32×32 images with random labels (speed only)."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> DataSplit:
        return DataSplit(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                         torch.randint(0, 10, (n,), generator=g))

    return DataSet("cifar10", split(n_train), split(n_test), 10)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(data: DataSet, overrides: list[str], args: argparse.Namespace) -> Stepper:
    base = ["data=cifar10", f"target={args.model}", f"threat.eps={EPS}",
            f"batch_size={args.batch_size}", f"device={args.device}", "progress=false",
            "monitor.enabled=false"]
    return Stepper(make_run([*base, *overrides], data=data))


def time_variant(data: DataSet, v: Variant, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per training batch after ``args.warmup`` batches."""
    trainer = _trainer(data, [*v.policy, *v.perf], args)
    device = trainer.run.device
    batches = iter(trainer.run.loader)
    for _ in range(args.warmup):
        trainer.train_step(next(batches), 0)
    times = []
    for _ in range(args.batches):
        b = next(batches)
        _sync(device)
        t0 = time.perf_counter()
        trainer.train_step(b, 0)
        _sync(device)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    return {"s_per_batch": s, "images_per_s": args.batch_size / s,
            "epoch_s": CIFAR_TRAIN / args.batch_size * s}


def speed_table(rows: dict[str, dict[str, float]], variant_list: list[Variant]) -> str:
    """Markdown: per configuration, time, throughput, ratio to PGD-10 AT, bf16 speed-up."""
    lines = ["| configuration | s / batch | images / s | CIFAR-10 epoch s | vs PGD-10 AT "
             "(same precision) | bf16 speed-up |", "|---|---:|---:|---:|---:|---:|"]
    for v in variant_list:
        r, base, fp32 = rows[v.label], rows[v.pgd_label], rows[v.fp32_label]
        ratio = f"{r['s_per_batch'] / base['s_per_batch']:.2f}"
        speedup = f"{fp32['s_per_batch'] / r['s_per_batch']:.2f}" if v.bf16 else "–"
        lines.append(f"| {v.label} | {r['s_per_batch']:.4f} | {r['images_per_s']:.1f} | "
                     f"{r['epoch_s']:.1f} | {ratio} | {speedup} |")
    return "\n".join(lines)


def robust_accuracy(trainer: Stepper, x: torch.Tensor, y: torch.Tensor, bf16: bool,
                    batch_size: int, seed: int = 0) -> float:
    """PGD-10 accuracy (α = ε/4, random start) with a float32 or bf16-autocast attack."""
    model = trainer.run.target.model.eval()
    g = torch.Generator(device=x.device).manual_seed(seed)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        ctx = (torch.autocast(trainer.run.device.type, dtype=torch.bfloat16) if bf16
               else contextlib.nullcontext())
        with ctx:
            x_adv = pgd_attack(model, xb, yb, geometry=Linf(), eps=EPS, alpha=EPS / 4, steps=10,
                               generator=g)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct / len(x)


def bf16_attack_table(data: DataSet, args: argparse.Namespace) -> str:
    """Train PGD-10 AT in fp32 and in bf16; attack each with fp32 and bf16 PGD-10."""
    lines = ["| trained in | batches | clean % | PGD-10 fp32 attack % | PGD-10 bf16 attack % "
             "| bf16 − fp32 attack (points) |", "|---|---:|---:|---:|---:|---:|"]
    for precision, perf in (("fp32", []), ("bf16", ["perf.bf16=true"])):
        trainer = _trainer(data, ["policy=pgd_at", "policy.steps=10", *perf], args)
        done = 0
        with tqdm(total=args.train_batches, desc=f"train {precision}", leave=False) as bar:
            while done < args.train_batches:
                for b in trainer.run.loader:
                    trainer.train_step(b, 0)
                    done += 1
                    bar.update(1)
                    if done == args.train_batches:
                        break
        x, y = trainer.run.test.x[:args.eval_n], trainer.run.test.y[:args.eval_n]
        with torch.no_grad():
            clean = float((trainer.run.target.model.eval()(x).argmax(1) == y).float().mean())
        fp32 = robust_accuracy(trainer, x, y, False, args.eval_batch)
        bf16 = robust_accuracy(trainer, x, y, True, args.eval_batch)
        lines.append(f"| {precision} | {done} | {100 * clean:.2f} | {100 * fp32:.2f} | "
                     f"{100 * bf16:.2f} | {100 * (bf16 - fp32):+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:<n> or cpu")
    p.add_argument("--data-root", help="folder with cifar-10-batches-py (default: synthetic)")
    p.add_argument("--model", help="target (default preact_resnet18; --quick: cifar_cnn)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5, help="untimed batches per configuration")
    p.add_argument("--batches", type=int, default=30, help="timed batches per configuration")
    p.add_argument("--train-batches", type=int, default=390,
                   help="PGD-10 AT batches before the bf16-attack comparison (390 = 1 epoch)")
    p.add_argument("--eval-n", type=int, default=2000, help="test images attacked in (b)")
    p.add_argument("--eval-batch", type=int, default=500)
    p.add_argument("--compile", action="store_true", help="add a perf.compile row (slow start)")
    p.add_argument("--skip-accuracy", action="store_true", help="speed table (a) only")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (a smoke test of every code path, e.g. --device cpu)")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.warmup, args.batches = 4, 1, 1
        args.train_batches, args.eval_n, args.eval_batch = 1, 8, 8
    args.model = args.model or ("cifar_cnn" if args.quick else "preact_resnet18")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device here; use --device cpu (with --quick for a short run)")
    n_train = (args.warmup + args.batches) * args.batch_size
    if args.data_root:
        data = load_dataset("cifar10", args.data_root)
        data = DataSet(data.name, data.train, DataSplit(data.test.images[:args.eval_n],
                                                        data.test.labels[:args.eval_n]), 10)
    else:
        data = synthetic_cifar(max(n_train, args.train_batches * args.batch_size), args.eval_n)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"device={args.device} ({name}) torch={torch.__version__} "
          f"threads={torch.get_num_threads()} load={os.getloadavg()[0]:.1f} model={args.model} "
          f"data={'cifar10' if args.data_root else 'synthetic'} batch={args.batch_size} "
          f"warm-up={args.warmup} timed={args.batches}", flush=True)
    speed_data = DataSet(data.name, DataSplit(data.train.images[:n_train],
                                              data.train.labels[:n_train]), data.test, 10)
    variant_list = variants(args.compile)
    rows = {}
    for v in variant_list:
        rows[v.label] = time_variant(speed_data, v, args)
        print(f"  {v.label}: {rows[v.label]['s_per_batch']:.4f} s/batch", flush=True)
    print("(a) speed\n" + speed_table(rows, variant_list), flush=True)
    if not args.skip_accuracy:
        print("(b) bf16 attacks (PGD-10, ε = 8/255, judged in fp32)\n"
              + bf16_attack_table(data, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
