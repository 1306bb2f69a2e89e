"""Checkpoints: atomic files, RNG states, and where a run stands (:class:`Position`).

Checkpoints are plain ``torch.save`` dictionaries of tensors and python primitives, so they
load with ``weights_only=True`` (no arbitrary code runs when a checkpoint is opened).

A run's position and everything a resume needs live here and nowhere else: :class:`Position`
(the next epoch, the global step, the epoch in progress with its running sums, and what a
mid-epoch checkpoint brought back), :func:`run_state` / :func:`restore_run` (a run's whole
state at a position, and its inverse) and :class:`Checkpointer` (writes ``last.pt``
atomically, mirrors it to the MLflow run, remembers the last good one; a failed write leaves
the previous checkpoint intact).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from learned_at.runners.config import config_to_dict
from learned_at.runners.epoch_progress import EpochProgress
from learned_at.runners.tracking_errors import TrackingAccessError

if TYPE_CHECKING:
    from learned_at.agents.base import Policy
    from learned_at.runners.run import Run
    from learned_at.runners.run_writer import RunWriter

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "Checkpointer", "Position", "load_checkpoint",
           "one_line", "restore_rng_state", "restore_run", "rng_state", "run_state",
           "safe_tag", "save_checkpoint"]

_log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or not a checkpoint of this project."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Saves ``state`` atomically: an interrupted save never leaves a half-written file.

    The state goes to a temporary file in the same folder, is fsynced, and then replaces
    ``path`` with :func:`os.replace`. The folder is created if needed.

    Args:
        path: Destination file.
        state: Dictionary of tensors and python primitives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Makes the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict:
    """Loads a checkpoint onto the CPU with ``weights_only=True``.

    Args:
        path: Checkpoint file.

    Returns:
        The saved dictionary.

    Raises:
        CheckpointError: The file is missing, corrupt or truncated, needs unsafe globals, or
            does not hold a dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    hint = (
        "Start a fresh run (without resuming), or point to another run id whose "
        "checkpoint is intact."
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load checkpoint {path}: the file is corrupt or truncated, or not a "
            f"checkpoint of this project ({type(exc).__name__}: {_first_line(exc)}). {hint}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not a checkpoint of this project (it holds a {type(state).__name__}, "
            f"not a dict). {hint}"
        )
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def rng_state(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    """Captures the torch RNG states (CPU global, CUDA if available, named generators).

    Args:
        generators: Named generators owned by the caller (e.g. ``{"data": g}``).

    Returns:
        ``{"torch": ByteTensor, "cuda": [ByteTensor, ...] (only with CUDA),
        "generators": {name: ByteTensor}}``: tensors only, so it loads with ``weights_only``.
    """
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "generators": {name: gen.get_state() for name, gen in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    """Restores :func:`rng_state` output.

    CUDA states are restored for the devices present in both the state and this machine.

    Args:
        state: Output of :func:`rng_state` (possibly loaded from a checkpoint).
        generators: The generators to restore, by the names they were captured under.

    Raises:
        CheckpointError: A generator has no saved state.
    """
    saved = state.get("generators", {})
    missing = [name for name in generators if name not in saved]
    if missing:
        raise CheckpointError(
            f"no saved RNG state for generator(s) {missing}; saved: {sorted(saved)}"
        )
    torch.set_rng_state(state["torch"])
    for name, gen in generators.items():
        gen.set_state(saved[name])
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        for index in range(min(len(cuda_states), torch.cuda.device_count())):
            torch.cuda.set_rng_state(cuda_states[index], index)


# ---------------------------------------------------------------------------- a run's position

CHECKPOINT_FORMAT = 4
"""4: the composed and the resolved config are stored; 3 (the previous layout) is refused."""


@dataclass
class Position:
    """Where a run stands (mutable: the loop advances it).

    Attributes:
        epoch: the epoch the loop starts at (0, or a resumed run's first unfinished epoch).
        global_step: batches trained since the start of the run.
        progress: the epoch in progress (None between epochs).
        resumed: a mid-epoch checkpoint's partial epoch, continued by the next
            :meth:`begin_epoch`; ``resumed_policy`` the policy state at that batch.
        resumed_epoch: the first epoch after a resume (its metrics may already be logged).
    """

    epoch: int = 0
    global_step: int = 0
    progress: EpochProgress | None = None
    resumed: EpochProgress | None = None
    resumed_policy: tuple[dict[str, Any], dict[str, Any]] | None = None
    resumed_epoch: int | None = None

    def begin_epoch(self, policy: Policy, epoch: int, data_rng: torch.Tensor) -> EpochProgress:
        """Start (or, after a mid-epoch resume, continue) ``epoch``; tells the policy."""
        p, self.resumed = self.resumed, None
        if p is None or p.epoch != epoch:
            p = EpochProgress(epoch, self.global_step, data_rng)
        self.progress = p
        policy.begin_epoch(epoch)
        if self.resumed_policy is not None:  # mid-epoch: the policy as it was at that batch
            weights, extra = self.resumed_policy
            policy.load_state_dict(weights)
            policy.load_extra_state(extra)
            self.resumed_policy = None
        return p


def run_state(run: Run, position: Position, next_epoch: int, batch: int = 0,
              unlogged: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to continue ``run`` exactly from ``batch`` batches into epoch
    ``next_epoch`` (weights_only-loadable); with ``batch`` > 0 the epoch's running sums and
    pending distribution values too. ``unlogged``: an epoch's record the tracking server did
    not take (``{"epoch", "plot", "metrics"}``, plain numbers), sent by the resume."""
    mid_epoch = batch > 0 and position.progress is not None
    return {
        "format": CHECKPOINT_FORMAT, "overrides": list(run.overrides),
        "config": run.composed, "resolved": config_to_dict(run.config),
        "epoch": next_epoch, "batch": batch, "global_step": position.global_step,
        **run.target.state_dict(), "policy": run.policy.state_dict(),
        "policy_extra": run.policy.extra_state(), "rng": rng_state(run.generators.named()),
        "progress": position.progress.state() if mid_epoch and position.progress else None,
        "distributions": run.distributions.state_dict(include_pending=mid_epoch),
        "image_shape": list(run.data.image_shape), "num_classes": run.data.num_classes,
        "target": run.config.target.name, "eps": run.eps, "unlogged": unlogged,
    }


def restore_run(run: Run, state: dict[str, Any]) -> Position:
    """Load :func:`run_state` into ``run`` (built from the same config, possibly re-planned to
    another number of epochs); returns the position to continue from."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint format {state.get('format')} was written by another "
                              f"version of this project (this one reads {CHECKPOINT_FORMAT});"
                              " start a fresh run")
    run.target.load_state_dict(state)
    scheduler = run.target.scheduler  # this run's schedule at the restored step (re-planned)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)  # from make_scheduler
    for group, base, f in zip(run.target.optimizer.param_groups, scheduler.base_lrs,
                              scheduler.lr_lambdas):
        group["lr"] = base * f(scheduler.last_epoch)
    run.policy.load_state_dict(state["policy"])
    run.policy.load_extra_state(state["policy_extra"])
    restore_rng_state(state["rng"], run.generators.named())
    run.generators.fork_other_ranks(run.world, run.config.seed, state["global_step"])
    run.distributions.load_state_dict(state["distributions"], run.device)
    position = Position(epoch=state["epoch"], global_step=state["global_step"],
                        resumed_epoch=state["epoch"])
    if state.get("progress") is not None:  # written inside an epoch
        position.resumed = EpochProgress.from_state(state["progress"], run.device)
        position.resumed_policy = (state["policy"], state["policy_extra"])
    return position


class Checkpointer:
    """Writes a run's ``<checkpoint_dir>/<run id>/last.pt`` (and ``best.pt``) atomically and
    mirrors them to the MLflow run as ``checkpoints/*.pt``.

    A failed write (a full disk) is logged, tagged on the run and leaves the previous
    checkpoint intact; :attr:`failed` says whether the latest write failed and
    :meth:`describe_last_good` names the one a resume would use. A mirror that the tracking
    server refuses or does not take through MLflow's retries raises its
    :class:`~runners.tracking_errors.TrackingAccessError` after the local file is written
    (the run stops there and resumes from it).

    ``writer``: this process's :class:`~runners.run_writer.RunWriter` (None on torchrun ranks
    > 0); :meth:`check_writer` — called before every write and by the loop before each epoch's
    log — raises :class:`~runners.writer_identity.WriterLostError` once the run was taken over.
    """

    def __init__(self, folder: str | Path, tracker: Any, write: bool = True,
                 writer: RunWriter | None = None) -> None:
        self.path = Path(folder) / tracker.run_id / "last.pt"
        self.tracker, self.write = tracker, write  # write: False on torchrun ranks > 0
        self.writer = writer
        self.failed = False
        self.last_good: tuple[Path, int, int] | None = None
        self.last_time = time.monotonic()

    def check_writer(self) -> None:
        """Raise when another process took the run over (see the class docstring)."""
        if self.writer is not None:
            self.writer.check()

    def due(self, every_s: float) -> bool:
        """A periodic checkpoint is due (``every_s`` > 0 seconds since the last one)."""
        return every_s > 0 and time.monotonic() - self.last_time >= every_s

    def save(self, state: Callable[[], dict[str, Any]], epoch: int, batch: int = 0) -> bool:
        """Write ``state()`` as the checkpoint at (``epoch``, ``batch``); False if it failed.
        Not mirrored once the tracker knows its server is down."""
        self.last_time = time.monotonic()
        if not self.write:
            return True
        self.check_writer()
        try:
            save_checkpoint(self.path, state())
        except (OSError, RuntimeError) as error:
            self.failed = True
            last = self.describe_last_good()
            _log.error("checkpoint write failed (%s); %s", one_line(error), last)
            safe_tag(self.tracker, "checkpoint_error", f"{one_line(error)}; {last}")
            return False
        self.failed = False
        self.last_good = (self.path, epoch, batch)
        if getattr(self.tracker, "unreachable", None) is not None:
            return True
        try:
            self.tracker.log_artifact(str(self.path), "checkpoints")
        except TrackingAccessError:
            raise
        except Exception as error:  # the local copy is what resume reads first
            _log.warning("could not copy the checkpoint to MLflow: %s", one_line(error))
        return True

    def save_best(self, state: dict[str, Any], epoch: int) -> None:
        """``best.pt`` beside ``last.pt`` (the CO monitor's best epoch), tagged ``best_epoch``."""
        if not self.write:
            return
        self.check_writer()
        best = self.path.with_name("best.pt")
        save_checkpoint(best, state)
        self.tracker.log_artifact(str(best), "checkpoints")
        self.tracker.set_tag("best_epoch", epoch)

    def describe_last_good(self) -> str:
        """Where a resume would continue from, in words."""
        if self.last_good is None:
            return "no checkpoint of this run has been written yet"
        path, epoch, batch = self.last_good
        where = f"end of epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"
        return f"the last good checkpoint {path} ({where}) is intact"


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def safe_tag(tracker: Any, key: str, value: str) -> None:
    """Set a run tag; a tracking problem is logged, never raised (a tag must not stop a run).
    Nothing is sent once the tracker knows its server is down."""
    if getattr(tracker, "unreachable", None) is not None:
        return
    try:
        tracker.set_tag(key, value[:5000])
    except Exception:  # pragma: no cover
        _log.warning("could not set tag %s", key)
