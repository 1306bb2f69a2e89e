"""A persistent shadow copy of a model with its own plain SGD optimiser.

Allocated once (a deepcopy at the first :meth:`Shadow.load`), then refreshed in place
(``copy_`` of parameters and buffers), so per-batch look-aheads and proxies allocate nothing.
Used by the target's one-step look-ahead ŵ (LAS-AT, PPO) and by AWP's proxy.

Data-parallel runs: the shadow's optimiser averages its gradients over the ranks before each
step (:func:`targets.distributed.average_gradients`), so ŵ and AWP's proxy are the global
batch's step, identical on every rank (a no-op for one process).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from learned_at.targets.distributed import average_gradients


class Shadow:
    """One reusable copy of a model (same architecture) and an SGD optimiser over it."""

    def __init__(self) -> None:
        self.module: nn.Module | None = None
        self._optimizer: torch.optim.SGD | None = None

    def load(self, model: nn.Module) -> nn.Module:
        """Copy ``model``'s parameters and buffers into the shadow; returns the shadow module."""
        if self.module is None:
            self.module = copy.deepcopy(model)
            for p in self.module.parameters():
                p.requires_grad_(True)
                p.grad = None
            self._optimizer = torch.optim.SGD(self.module.parameters(), lr=0.0)
            self._optimizer.register_step_pre_hook(_average_over_ranks)
        else:
            with torch.no_grad():
                for s, p in zip(self.module.parameters(), model.parameters()):
                    s.copy_(p)
                for sb, b in zip(self.module.buffers(), model.buffers()):
                    sb.copy_(b)
        return self.module

    def sgd(self, lr: float, weight_decay: float = 0.0) -> torch.optim.SGD:
        """The shadow's optimiser set to a plain SGD step (no momentum state is kept)."""
        if self._optimizer is None:
            raise RuntimeError("Shadow.sgd needs load(model) first")
        for group in self._optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, weight_decay
        return self._optimizer


def _average_over_ranks(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    """Step pre-hook: the gradients of the global batch (one process: nothing)."""
    average_gradients(p for group in optimizer.param_groups for p in group["params"])
