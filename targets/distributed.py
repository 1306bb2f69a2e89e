"""Collectives over the data-parallel process group, for the parts that must see the whole
global batch (the target's look-ahead, AWP's proxy, learned policies, per-sample memories).

Every function reads :mod:`torch.distributed`'s own state: outside a process group (one
process, the default) each one is the identity and costs nothing, so callers need no flag.
The process group itself is set up by :mod:`runners.distributed` under ``torchrun``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a group)."""
    return dist.get_rank() if world_size() > 1 else 0


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks (a new tensor; ``t`` is untouched). ``t`` itself for one process."""
    if world_size() == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out.div_(world_size())


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum of ``t`` over ranks (a new tensor). ``t`` itself for one process."""
    if world_size() == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (N, ...) — equal shapes on all ranks — concatenated along dim 0 in rank
    order: (world_size * N, ...). Without a graph. ``t`` itself for one process."""
    if world_size() == 1:
        return t
    t = t.detach().contiguous()
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def average_buffers(module: torch.nn.Module) -> None:
    """Replace every floating-point buffer of ``module`` (BatchNorm running statistics) by its
    mean over ranks, in place; integer buffers (counters) are equal on every rank already."""
    if world_size() == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world_size())


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace the ``.grad`` of ``params`` by its mean over ranks, in place (one flat
    all-reduce). Call between ``backward`` and gradient clipping / the optimiser step: with
    equal shards and a loss that is a mean over the shard, the result is the gradient of the
    global batch's mean, and every rank takes the same step. No-op for one process."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world_size())
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n
