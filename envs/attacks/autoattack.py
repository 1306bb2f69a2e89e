"""AutoAttack (Croce & Hein, 2020) from its authors' package, ``pyautoattack`` 0.2.0.

The evaluation attack ``autoattack`` (:class:`AutoAttack`, the ensemble of the masking checks
under L∞ and L2) and the pyautoattack wrapper behind it and behind ``square[<Q>]``
(:mod:`envs.attacks.square`). ``pyautoattack`` is an optional dependency (extra ``eval``),
imported only when one of these attacks runs (:func:`import_pyautoattack`).

Reported numbers always come from ``version="standard"``: APGD-CE, APGD-T (9 target classes),
FAB-T (9 target classes) and Square (5000 queries), 100 iterations each, for L∞ and L2
(https://github.com/fra31/auto-attack, ``autoattack.py::_set_version``). ART's and torchattacks'
"AutoAttack" are *not* used: ART swaps in DeepFool and untargeted DLR, torchattacks runs 10
instead of 100 iterations (docs/references.md §9.3). AutoAttack's norm is the
geometry's :attr:`~envs.geometry.base.Geometry.autoattack_norm` (a fact about the norm; a
geometry without one refuses AutoAttack and Square).

Like the original, each attack runs only on the points that are still robust and the result is
the per-example worst case over the four attacks; its stages are reported as
``autoattack.<attack>`` (robust accuracy after each). Two departures from
``AutoAttack.run_standard_evaluation``, both about bookkeeping, not about the attacks:

* **Resumable state of our own.** pyautoattack 0.2.0's ``state_path`` cannot resume: the state
  file stores the attack set as a string (``json.dump(default=str)`` of a ``set``), so
  ``from_disk`` always raises "The state was created with a different set of attacks", and the
  restore branch never defines ``y_adv`` (measured). Here the library is called one attack at a
  time on chunks of ``batch_size`` still-robust points, and after every chunk the robust flags
  are written atomically to a JSON file that also records a fingerprint of the model, data,
  ε, norm, seed and attack list (a stale file is ignored, never trusted).
* **Independent verification.** A point counts as broken only if *our* eval-mode forward pass
  misclassifies the returned example and the example lies in the ε-ball and in [0, 1]; an
  out-of-ball example from the library raises instead of being counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from learned_at.envs.attack_env import target_mode
from learned_at.envs.attacks.base import AttackContext, AttackOutcome, AttackRole, EvalAttack
from learned_at.envs.geometry.base import Geometry

__all__ = ["AUTOATTACK_VERSION", "STANDARD_ATTACKS", "AutoAttack", "AutoAttackResult",
           "import_pyautoattack", "make_autoattack", "make_square", "run_autoattack",
           "state_path"]

AUTOATTACK_VERSION = "standard"
"""The only version used for reported numbers."""
STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
"""The attacks of ``version="standard"``, in their order."""
STATE_FORMAT = 1


def _norm_name(geometry: Geometry) -> str:
    """AutoAttack's name of the geometry's norm; geometries without one are refused."""
    if geometry.autoattack_norm is None:
        raise ValueError(f"the standard AutoAttack does not apply to threat={geometry.name}")
    return geometry.autoattack_norm

#: builds the adversary: (model, geometry, eps, seed, device) -> pyautoattack.AutoAttack
AdversaryFactory = Callable[[nn.Module, Geometry, float, int, torch.device], Any]


def import_pyautoattack() -> Any:
    """The ``pyautoattack`` module, or an ImportError that says how to install it."""
    try:
        import pyautoattack
    except ImportError:
        raise ImportError("AutoAttack needs the optional package pyautoattack (the original "
                          "implementation by Croce & Hein): pip install pyautoattack==0.2.0 "
                          "(or pip install -e '.[eval]')") from None
    return pyautoattack


def make_autoattack(model: nn.Module, geometry: Geometry, eps: float, seed: int,
                    device: torch.device) -> Any:
    """The standard AutoAttack adversary (the reported path; never reduced)."""
    aa = import_pyautoattack().AutoAttack(model, norm=_norm_name(geometry), eps=float(eps),
                                          seed=int(seed), device=device,
                                          version=AUTOATTACK_VERSION)
    aa.verbose = False  # progress comes from our bar; the library still logs its checks
    return aa


def make_square(model: nn.Module, geometry: Geometry, eps: float, seed: int,
                device: torch.device, queries: int = 5000) -> Any:
    """Square Attack alone (score-based black-box; the library's ``version="custom"``).

    Used as the black-box attack ``square<Q>`` and by the gradient-masking checks; its numbers
    are *not* AutoAttack numbers.
    """
    aa = import_pyautoattack().AutoAttack(model, norm=_norm_name(geometry), eps=float(eps),
                                          seed=int(seed), device=device, version="custom",
                                          attacks=["square"])
    aa.square.n_queries = int(queries)
    aa.verbose = False
    return aa


@dataclass
class AutoAttackResult:
    """Outcome of one AutoAttack evaluation.

    Attributes:
        robust: (N,) bool, correct after every attack (the worst case).
        stages: per attack, ``{"acc": robust accuracy after it (cumulative), "time_s": ...}``.
        version: the pyautoattack version string the adversary was built with.
        resumed_from: attacks already done in the state file this run continued from.
    """

    robust: torch.Tensor
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    version: str = AUTOATTACK_VERSION
    resumed_from: list[str] = field(default_factory=list)


def _fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
                 seed: int, attacks: list[str]) -> str:
    """sha1 over the model weights, the data and the settings (a stale state never resumes)."""
    h = hashlib.sha1(json.dumps([norm, float(eps), int(seed), attacks, list(x.shape)]).encode())
    for t in [*model.state_dict().values(), x, y]:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_state(path: Path | None, fingerprint: str) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        logging.getLogger(__name__).warning("ignoring unreadable AutoAttack state %s", path)
        return None
    if state.get("format") != STATE_FORMAT or state.get("fingerprint") != fingerprint:
        logging.getLogger(__name__).warning(
            "ignoring AutoAttack state %s: it belongs to another model/data/setting", path)
        return None
    return state


def _save_state(path: Path | None, state: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)  # atomic: an interrupted write leaves the previous state


def _broken(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
            geometry: Geometry, eps: float) -> torch.Tensor:
    """(n,) bool: x_adv is a valid adversarial example by our own check. Raises when the
    library returned a misclassified point outside the threat model."""
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    size = geometry.size(x_adv - x)
    outside = (size > eps * (1 + 1e-4) + 1e-6) | (x_adv.amin((1, 2, 3)) < -1e-6) | (
        x_adv.amax((1, 2, 3)) > 1 + 1e-6)
    bad = fooled & outside
    if bool(bad.any()):
        raise RuntimeError(f"AutoAttack returned {int(bad.sum())} example(s) outside the "
                           f"{geometry.name} ball of radius {eps} or the [0, 1] box "
                           f"(largest size {float(size[bad].max()):.6f}); refusing to count them")
    return fooled


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, geometry: Geometry,
                   eps: float, *, batch_size: int = 500, seed: int = 0,
                   state_path: str | os.PathLike | None = None, progress: bool = False,
                   make_adversary: AdversaryFactory = make_autoattack) -> AutoAttackResult:
    """Worst case over the standard AutoAttack list, resumable chunk by chunk.

    Args:
        model: the target (run in eval mode, restored afterwards); (N, C, H, W) -> (N, K).
        x: (N, C, H, W) images in [0, 1] on the model's device; y: (N,) int64 labels.
        geometry: a geometry with an AutoAttack norm (L∞, L2). eps: the budget.
        batch_size: points per library call (and per state save).
        seed: the adversary's seed (pyautoattack falls back to the clock when it is None).
        state_path: JSON file for resuming an interrupted evaluation (None: no state). It is
            removed once the evaluation completes.
        progress: show a bar per attack (attack name, points done, robust accuracy).
        make_adversary: builds the adversary; only tests pass a reduced one for speed.

    Returns:
        :class:`AutoAttackResult` with the per-example robust mask and the per-attack stages.
    """
    _norm_name(geometry)
    path = Path(state_path) if state_path is not None else None
    with target_mode(model, False):
        adversary = make_adversary(model, geometry, eps, seed, x.device)
        attacks = list(adversary.attacks_to_run)
        fp = _fingerprint(model, x, y, geometry.name, eps, seed, attacks)
        state = _load_state(path, fp)
        if state is None:
            with torch.no_grad():
                clean = torch.cat([model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]
                                   for i in range(0, len(x), batch_size)])
            state = {"format": STATE_FORMAT, "fingerprint": fp, "attacks": attacks,
                     "robust": clean.cpu().tolist(), "done": [], "stages": {},
                     "current": None, "pending": [], "position": 0, "time_s": 0.0}
            _save_state(path, state)
        result = AutoAttackResult(torch.zeros(0, dtype=torch.bool),
                                  version=adversary.version, resumed_from=list(state["done"]))
        robust = torch.tensor(state["robust"], dtype=torch.bool, device=x.device)
        try:
            for attack in attacks:
                if attack not in state["done"]:
                    robust = _run_one(adversary, attack, model, x, y, geometry, eps, robust,
                                      state, path, batch_size, progress)
        finally:
            adversary.attacks_to_run = attacks
    result.robust = robust
    result.stages = {a: dict(state["stages"][a]) for a in attacks if a in state["stages"]}
    if path is not None and path.exists():
        path.unlink()
    return result


def _run_one(adversary: Any, attack: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             geometry: Geometry, eps: float, robust: torch.Tensor, state: dict[str, Any],
             path: Path | None, batch_size: int, progress: bool) -> torch.Tensor:
    """Run one attack of the list on the still-robust points; updates ``state`` in place."""
    if state["current"] != attack:  # a fresh attack: freeze its to-do list
        state.update(current=attack, pending=robust.nonzero().squeeze(1).tolist(), position=0,
                     time_s=0.0)
        _save_state(path, state)
    pending = torch.tensor(state["pending"], dtype=torch.long, device=x.device)
    adversary.attacks_to_run = [attack]
    bar = tqdm(total=len(pending), initial=state["position"], desc=f"autoattack {attack}",
               leave=False, disable=not progress)
    t0 = time.perf_counter() - state["time_s"]
    while state["position"] < len(pending):
        idx = pending[state["position"]:state["position"] + batch_size]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        x_adv, _ = adversary.run_standard_evaluation(xb, yb, batch_size=len(idx))
        robust[idx[_broken(model, xb, x_adv.to(xb.device), yb, geometry, eps)]] = False
        state.update(robust=robust.cpu().tolist(), position=state["position"] + len(idx),
                     time_s=time.perf_counter() - t0)
        _save_state(path, state)
        bar.update(len(idx))
        bar.set_postfix(robust_acc=f"{state['robust'].count(True) / len(x):.4f}")
    bar.close()
    state["stages"][attack] = {"acc": robust.float().mean().item(),
                               "time_s": time.perf_counter() - t0}
    state["done"].append(attack)
    state.update(current=None, pending=[], position=0)
    _save_state(path, state)
    return robust


def state_path(context: AttackContext, name: str) -> Path | None:
    """The resumable-state file of the attack ``name`` in ``context.state_dir`` (or None)."""
    return None if context.state_dir is None else Path(context.state_dir) / f"{name}_state.json"


@dataclass(frozen=True)
class AutoAttack(EvalAttack):
    """The standard AutoAttack (``autoattack``): the per-example worst case over APGD-CE,
    APGD-T, FAB-T and Square, resumable (module docstring). ``AttackContext.make_adversary``
    replaces the standard factory (tests only).

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> robust (N,) bool, plus one stage per attack.
    """

    name: str = "autoattack"
    spelling: ClassVar[str] = "autoattack"
    roles: ClassVar[AttackRole] = AttackRole.ENSEMBLE

    @staticmethod
    def factory(model: nn.Module, geometry: Geometry, eps: float, seed: int,
                device: torch.device) -> Any:
        """The pyautoattack adversary this attack runs (a subclass may run other stages)."""
        return make_autoattack(model, geometry, eps, seed, device)

    @classmethod
    def parse(cls, name: str) -> AutoAttack | None:
        return cls() if name == cls.spelling else None

    @classmethod
    def default(cls) -> AutoAttack:
        return cls()

    @classmethod
    def check_available(cls) -> None:
        import_pyautoattack()

    def robust_mask(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    geometry: Geometry, eps: float, context: AttackContext) -> AttackOutcome:
        res = run_autoattack(model, x, y, geometry, eps, batch_size=context.batch_size,
                             seed=context.seed, state_path=state_path(context, self.name),
                             progress=context.progress,
                             make_adversary=context.make_adversary or self.factory)
        return AttackOutcome(res.robust, res.stages)

    def tags(self) -> dict[str, str]:
        return {"autoattack_version": f"pyautoattack {AUTOATTACK_VERSION}"}
