"""One process per device under ``torchrun``: joining the process group, the rank's device,
the DistributedDataParallel wrapper of the target, and leaving cleanly.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them (a plain
``python -m runners.cotrain``) :func:`init_world` returns a one-process :class:`World` and
nothing else changes. Backend: gloo on CPU, NCCL on CUDA (device ``cuda:LOCAL_RANK``).
The collectives used inside the training step live in :mod:`targets.distributed`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

_log = logging.getLogger(__name__)


class DistributedConfigError(ValueError):
    """A setting that cannot work in this process group (the message names the fix)."""


@dataclass(frozen=True)
class World:
    """Where this process sits.

    Attributes:
        rank: this process's rank (0 logs, checkpoints and draws progress bars).
        size: number of processes.
        local_rank: rank on this node (selects the CUDA device).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0."""
        return self.rank == 0


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process when it is absent)."""
    env = os.environ
    return World(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")),
                 int(env.get("LOCAL_RANK", "0")))


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes; returns the world and this rank's device.

    ``device``: the configured device; under torchrun a CUDA device becomes
    ``cuda:LOCAL_RANK`` (one GPU per process). One process: ``(World(), device)`` untouched.
    """
    world = world_from_env()
    if not world.distributed:
        return world, device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        options: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, **options)
        _log.info("rank %d/%d on %s (%s)", world.rank, world.size, device, backend)
    return world, device


def wrap_model(model: nn.Module, world: World, device: torch.device,
               sync_batchnorm: bool = False) -> nn.Module:
    """The module the target's training step runs: ``model`` in DistributedDataParallel when
    distributed (gradients averaged over ranks during ``backward``), else ``model`` itself.

    The wrapper shares ``model``'s parameters, so everything else (attacks in eval mode,
    look-ahead copies, checkpoints) keeps using the bare ``model``. ``broadcast_buffers``
    stays on: rank 0's BatchNorm running statistics are copied to every rank at each training
    forward, so all ranks evaluate and checkpoint the same model. ``sync_batchnorm``: convert
    BatchNorm layers to SyncBatchNorm (batch statistics over the global batch; CUDA only — on
    CPU/gloo PyTorch refuses SyncBatchNorm). It converts ``model`` in place, so call this before
    the optimiser is built.
    """
    if sync_batchnorm:
        if not world.distributed:
            return model  # one process: the batch already is the global batch
        if device.type != "cuda":
            raise DistributedConfigError(
                "sync_batchnorm=true needs CUDA (SyncBatchNorm only works with GPU modules); "
                "use sync_batchnorm=false on CPU (per-rank batch statistics)")
        for name, child in list(model.named_children()):  # in place: the optimiser's params
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


RANK_SEED_STRIDE = 1_000_003
"""Seed distance between two ranks' streams (rank 0 keeps the one-process seeds)."""


def rank_seed(seed: int, world: World, shared: bool = False, step: int = 0) -> int:
    """The seed of a named generator on this rank: ``seed`` for one process, for rank 0 and for
    ``shared`` streams (the data order, drawn alike on every rank); else ``seed + rank`` spread
    by :data:`RANK_SEED_STRIDE` (attack starts and policy sampling differ per rank, as in
    ``seed + rank`` practice). ``step``: a resumed run's global step, so that ranks > 0 fork
    fresh streams from where rank 0's saved state continues."""
    if shared or world.rank == 0:
        return seed
    return seed + RANK_SEED_STRIDE * world.rank + 7919 * step


class NullTracker:
    """What ranks > 0 hold instead of a :class:`~runners.tracking.Tracker`: the run id of rank
    0's run, and every logging call a no-op (MLflow is written by rank 0 only)."""

    unreachable = None  # runners.tracking.Tracker's: a rank > 0 never talks to the server

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def has_metric_at(self, key: str, step: int) -> bool:
        return False

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def broadcast_buffers(model: nn.Module, world: World) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, in place."""
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(obj, world: World):
    """Rank 0's (picklable) ``obj`` on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(world: World) -> None:
    """Leave the process group (after a barrier, so no rank leaves while another still needs
    it). gloo's worker threads can abort the interpreter's exit afterwards (``terminate called
    without an active exception``, 2-3 runs in 10): the caller ends the process with
    :func:`os._exit` (see :func:`exit_process`)."""
    if world.distributed and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def exit_process(code: int, world: World) -> int:
    """End a distributed process at once with ``code`` (streams flushed; no interpreter
    finalisation, which is where gloo's teardown aborts); returns ``code`` for one process."""
    if not world.distributed:
        return code
    import logging as _logging
    import sys

    _logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
