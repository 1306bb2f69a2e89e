"""Robustness evaluation: clean, FGSM, PGD-k with restarts and CW-L∞ (margin-loss PGD).

Usage::

    python -m runners.evaluate run_id=<id> attacks=[clean,fgsm,pgd20,pgd50x10,cw30]
        [n_examples=1000] [batch_size=500] [seed=0] [checkpoint_dir=checkpoints]

Attack names: ``clean``, ``fgsm``, ``pgd<K>``, ``pgd<K>x<R>`` (R restarts), ``cw<K>``,
``cw<K>x<R>``. PGD and CW use α = ε/4 and a random start. Each evaluation logs
``eval/<attack>_acc`` into the run, plus ``eval/worst_case_acc`` (a sample counts as robust only
if it survives every attack in the list).
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from envs.attack_loss import AttackLoss
from envs.pgd import fgsm_attack, pgd_attack
from envs.threat import ThreatModel

_PATTERN = re.compile(r"^(clean|fgsm|pgd|cw)(\d+)?(?:x(\d+))?$")


@dataclass(frozen=True)
class AttackSpec:
    """A named evaluation attack.

    Attributes:
        name: as written by the user (``pgd50x10``).
        kind: ``clean``, ``fgsm``, ``pgd`` or ``cw``.
        steps: iterations (0 for clean, 1 for fgsm).
        restarts: random restarts.
    """

    name: str
    kind: str
    steps: int = 0
    restarts: int = 1


def parse_attack(name: str) -> AttackSpec:
    """Parse an attack name; unknown names raise a ValueError with the valid patterns."""
    m = _PATTERN.match(name.strip())
    if not m or (m.group(1) in ("pgd", "cw") and not m.group(2)) or (
            m.group(1) in ("clean", "fgsm") and (m.group(2) or m.group(3))):
        raise ValueError(f"unknown attack {name!r}; valid: clean, fgsm, pgd<K>, pgd<K>x<R>, "
                         "cw<K>, cw<K>x<R> (e.g. pgd20, pgd50x10, cw30)")
    kind = m.group(1)
    steps = {"clean": 0, "fgsm": 1}.get(kind, int(m.group(2) or 0))
    return AttackSpec(name.strip(), kind, steps, int(m.group(3) or 1))


def attack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
                 threat: ThreatModel, eps: float, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Adversarial examples of one batch for ``spec``. (N, C, H, W) -> (N, C, H, W)."""
    if spec.kind == "clean":
        return x
    if spec.kind == "fgsm":
        return fgsm_attack(model, x, y, threat=threat, eps=eps)
    loss = AttackLoss.CE if spec.kind == "pgd" else AttackLoss.MARGIN
    return pgd_attack(model, x, y, threat=threat, eps=eps, alpha=eps / 4, steps=spec.steps,
                      restarts=spec.restarts, loss=loss, generator=generator)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Eval-mode predictions (N,) int64 for a tensor of images (N, C, H, W)."""
    was = model.training
    model.eval()
    preds = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    model.train(was)
    return preds


def correct_under_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
                         threat: ThreatModel, eps: float, batch_size: int,
                         generator: torch.Generator | None = None, progress: bool = False
                         ) -> torch.Tensor:
    """Per-example robustness mask (N,) bool: still classified correctly after the attack."""
    out = []
    it = range(0, len(x), batch_size)
    for i in tqdm(it, desc=f"eval {spec.name}", leave=False, disable=not progress):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        x_adv = attack_batch(model, xb, yb, spec, threat, eps, generator)
        out.append(predict(model, x_adv, batch_size) == yb)
    return torch.cat(out)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: list[str],
             threat: ThreatModel, eps: float, batch_size: int = 500,
             generator: torch.Generator | None = None, progress: bool = False
             ) -> dict[str, dict[str, float]]:
    """Accuracy under each attack plus the per-example worst case over the list.

    Returns:
        {attack name: {"acc": float, "time_s": float, "n": int}, ..., "worst_case": {...}}.
    """
    results: dict[str, dict[str, float]] = {}
    worst = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for name in attacks:
        spec = parse_attack(name)
        t0 = time.perf_counter()
        mask = correct_under_attack(model, x, y, spec, threat, eps, batch_size, generator,
                                    progress)
        worst &= mask
        results[spec.name] = {"acc": mask.float().mean().item(),
                              "time_s": time.perf_counter() - t0, "n": len(x)}
    results["worst_case"] = {"acc": worst.float().mean().item(), "time_s": 0.0, "n": len(x)}
    return results


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    from runners.cli_args import parse_key_values
    from runners.run_loading import load_run

    args = parse_key_values(sys.argv[1:] if argv is None else argv, {
        "run_id": None, "attacks": ["clean", "fgsm", "pgd20", "cw20"], "n_examples": 0,
        "batch_size": 500, "seed": 0, "checkpoint_dir": "checkpoints", "progress": True,
        "device": "auto"})
    if not args["run_id"]:
        raise SystemExit("runners.evaluate: run_id=<mlflow run id> is required")
    loaded = load_run(args["run_id"], args["checkpoint_dir"], args["device"])
    x, y = loaded.test_tensors(int(args["n_examples"]))
    gen = torch.Generator(device=x.device).manual_seed(int(args["seed"]))
    attacks = [a for a in args["attacks"]]
    for a in attacks:
        parse_attack(a)
    results = evaluate(loaded.model, x, y, attacks, loaded.threat, loaded.eps,
                       int(args["batch_size"]), gen, bool(args["progress"]))
    with loaded.tracker() as tracker:
        tracker.log_metrics({f"eval/{k}_acc": v["acc"] for k, v in results.items()}, step=0)
        rows = [{"attack": k, "eps": loaded.eps, "n": v["n"], "acc": v["acc"],
                 "time_s": v["time_s"]} for k, v in results.items()]
        tracker.log_dict({"rows": rows}, f"eval/table_{int(time.time())}.json")
    for r in rows:
        print(f"{r['attack']:>12s}  eps={r['eps']:.4f}  n={r['n']}  acc={r['acc']:.4f}  "
              f"({r['time_s']:.1f}s)")
    print(f"run_id={args['run_id']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
