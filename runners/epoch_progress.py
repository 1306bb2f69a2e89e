"""Where a co-training epoch stands, in a form a checkpoint can hold (mid-epoch resume).

:class:`EpochAccumulator` keeps device-side running sums of per-batch scalars (no host sync);
:class:`EpochProgress` adds the position in the epoch, the data generator's state at its start
(the epoch's order is redrawn from it on resume) and a device-side flag of non-finite values
with the number of batches before the first one — read on the host only at the loop's
periodic syncs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["EpochAccumulator", "EpochProgress"]


@dataclass
class EpochAccumulator:
    """Device-side running sums of per-batch training scalars (no host sync)."""

    sums: dict[str, torch.Tensor]
    count: int = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1

    def means(self) -> dict[str, torch.Tensor]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def state(self) -> dict[str, Any]:
        return {"sums": {k: v.clone() for k, v in self.sums.items()}, "count": self.count}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochAccumulator:
        return cls({k: v.to(device) for k, v in state["sums"].items()}, int(state["count"]))


@dataclass
class EpochProgress:
    """Where the epoch in progress stands; saved with a checkpoint written inside it.

    Attributes:
        epoch: the epoch (0-based).
        batch: batches of it done.
        start_step: the global step of its first batch.
        data_rng: the data generator's state when the epoch started (its order is drawn from
            it at the first batch).
        stats, policy_metrics: the running sums of the training scalars.
        seconds: training seconds spent in this epoch before the current process took over.
        bad: device bool, a non-finite value was seen this epoch; good: device int64, the
            number of batches before the first one (no host sync to keep them).
    """

    epoch: int
    start_step: int
    data_rng: torch.Tensor
    batch: int = 0
    stats: EpochAccumulator = field(default_factory=lambda: EpochAccumulator({}))
    policy_metrics: EpochAccumulator = field(default_factory=lambda: EpochAccumulator({}))
    seconds: float = 0.0
    bad: torch.Tensor | None = None
    good: torch.Tensor | None = None

    def add(self, stats: dict[str, torch.Tensor], policy_metrics: dict[str, torch.Tensor]
            ) -> None:
        """Account one batch (device ops only)."""
        self.stats.add(stats)
        if policy_metrics:
            self.policy_metrics.add(policy_metrics)
        values = torch.stack([v.detach().float().reshape(())
                              for v in (*stats.values(), *policy_metrics.values())])
        finite = torch.isfinite(values).all()
        self.bad = ~finite if self.bad is None else self.bad | ~finite
        good = (~self.bad).long()
        self.good = good if self.good is None else self.good + good
        self.batch += 1

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "start_step": self.start_step,
                "data_rng": self.data_rng, "stats": self.stats.state(),
                "policy_metrics": self.policy_metrics.state(), "seconds": self.seconds,
                "bad": self.bad, "good": self.good}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochProgress:
        moved = {k: (None if state[k] is None else state[k].to(device)) for k in ("bad", "good")}
        return cls(int(state["epoch"]), int(state["start_step"]), state["data_rng"],
                   int(state["batch"]), EpochAccumulator.from_state(state["stats"], device),
                   EpochAccumulator.from_state(state["policy_metrics"], device),
                   float(state["seconds"]), **moved)
