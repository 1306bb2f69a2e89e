"""Run under ``torchrun`` by tests/runners/test_ddp.py: tiny co-trainings in one process group,
then each rank saves what it holds (target weights, policy parameters) for the test to compare.

Usage: ``torchrun ... tests/runners/ddp_worker.py <out_dir> <name>=<override,override,...> ...``
(one co-training per ``name``; their results go to ``<out_dir>/<name>.rank<r>.pt``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from learned_at.runners.compose import compose_config
from learned_at.runners.cotrain import execute
from learned_at.runners.run import build_run
from learned_at.runners.distributed import exit_process, shutdown, world_from_env


def main(out_dir: str, jobs: list[str]) -> None:
    world = world_from_env()
    for job in jobs:
        name, overrides = job.split("=", 1)
        args = overrides.split(",")
        run = build_run(compose_config(args), args)
        run_id = execute(run)
        soft = run.target.loss.soft_labels  # Self-Adaptive Training memory, if any
        torch.save({"run_id": run_id, "model": run.target.model.state_dict(),
                    "policy": {k: v for k, v in run.policy.state_dict().items()},
                    "soft_labels": None if soft is None else {"memory": soft.memory}},
                   Path(out_dir) / f"{name}.rank{world.rank}.pt")
    shutdown(world)
    exit_process(0, world)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
