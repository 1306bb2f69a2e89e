"""What one co-training run is made of, built once: :func:`build_run` -> :class:`Run`.

:func:`build_run` resolves every preset of the config (:func:`runners.presets.resolve_config`),
loads the data, and builds the target (model, optimiser, schedule, AT loss), the policy, the
attack env, the CO monitor and the named random generators, in a fixed order (the model's
initialisation is the one consumer of the global RNG, seeded right before it). The
:class:`Run` record it returns is what the loop (:mod:`runners.train`) reads; its components
(the target, the policy, the distribution history) hold the state that training changes.

A setting that cannot work (a batch larger than the data, a loss that cannot train on the
policy's episodes, a preset that does not exist) raises :class:`~runners.config.ConfigError`
before anything trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from learned_at.agents.base import Policy, PolicyContext, make_policy
from learned_at.envs.attack_env import AttackEnv, EnvConfig
from learned_at.envs.geometry.base import Geometry, make_geometry
from learned_at.runners.co_monitor import COMonitor
from learned_at.runners.config import ConfigError, CotrainConfig, config_to_dict
from learned_at.runners.device import pick_device
from learned_at.runners.distributed import (DistributedConfigError, World, init_world, rank_seed,
                                            wrap_model)
from learned_at.runners.distributions import DistributionHistory
from learned_at.runners.fast_path import prepare_model
from learned_at.runners.presets import resolve_config, run_budget
from learned_at.runners.schedule import make_scheduler
from learned_at.runners.thread_governor import ThreadGovernor
from learned_at.runners.threads import apply_threads, make_governor
from learned_at.targets.datasets import DataSet, load_dataset, split_validation, subset_dataset
from learned_at.targets.loader import DeviceLoader, to_device
from learned_at.targets.losses.base import LossContext, make_at_loss
from learned_at.targets.models import make_model
from learned_at.targets.target import Target

__all__ = ["EvalSet", "Generators", "Run", "build_run"]


class EvalSet(NamedTuple):
    """Fixed, un-augmented images on the device: x (N, C, H, W) in [0, 1], y (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class Generators:
    """The run's named random streams (all on the run's device).

    Attributes:
        data: the data order and augmentation (the same on every torchrun rank).
        attack: attack starts (per rank).
        policy: the policy's sampling (per rank).
    """

    data: torch.Generator
    attack: torch.Generator
    policy: torch.Generator

    @classmethod
    def seeded(cls, seed: int, world: World, device: torch.device) -> Generators:
        """``seed``, ``seed + 1``, ``seed + 2`` (ranks > 0 of a torchrun job: their own
        streams for attack and policy, :func:`runners.distributed.rank_seed`)."""
        return cls(*(torch.Generator(device=device).manual_seed(
            rank_seed(seed + i, world, shared=name == "data"))
            for i, name in enumerate(("data", "attack", "policy"))))

    def named(self) -> dict[str, torch.Generator]:
        """name -> generator (what a checkpoint stores)."""
        return {"data": self.data, "attack": self.attack, "policy": self.policy}

    def fork_other_ranks(self, world: World, seed: int, step: int) -> None:
        """After a resume, ranks > 0 fork fresh attack / policy streams from ``step`` (rank 0
        continues the saved ones)."""
        if world.rank:
            self.attack.manual_seed(rank_seed(seed + 1, world, step=step))
            self.policy.manual_seed(rank_seed(seed + 2, world, step=step))


@dataclass(frozen=True)
class Run:
    """One co-training run's components (see the module docstring).

    Attributes:
        config: the resolved config (no preset left open).
        composed: the config as composed from the command line (plain dict; a resume compares
            its overrides with it).
        overrides: the command-line overrides (the run's name, its resume).
        world: this process's place in a torchrun job (one process: rank 0 of 1).
        device: where the data, the target and the attack live.
        data: the data set (after ``data.train_subset`` / ``test_subset`` / ``val_size``).
        loader: the training batches (this rank's slice of each global batch).
        test: the whole test split; held_out: the per-epoch monitoring split (the validation
            split with ``data.val_size``, else the test split), named ``held_out_name``;
            train_probe: the first training samples, un-augmented (``train/clean_acc``).
        geometry: the threat geometry; eps: the nominal budget in its unit.
        target: model, optimiser, schedule, AT loss; env: the attack env on the model.
        policy: the attack policy; monitor: the CO monitor (None when disabled).
        generators: the named random streams.
        distributions: per-epoch distributions of the policy's per-sample choices.
        threads: ``threads=0``'s governor of torch's CPU threads, polled between training
            batches (None: a pinned count, one CPU, or no CPU accounting here).
    """

    config: CotrainConfig
    composed: dict[str, Any]
    overrides: tuple[str, ...]
    world: World
    device: torch.device
    data: DataSet
    loader: DeviceLoader
    test: EvalSet
    held_out: EvalSet
    held_out_name: str
    train_probe: EvalSet
    geometry: Geometry
    eps: float
    target: Target
    env: AttackEnv
    policy: Policy
    monitor: COMonitor | None
    generators: Generators
    distributions: DistributionHistory
    threads: ThreadGovernor | None = None

    @property
    def epochs(self) -> int:
        """Epochs of the run (resolved)."""
        return int(self.config.epochs)  # type: ignore[arg-type]


def build_run(cfg: CotrainConfig, overrides: Sequence[str] = (),
              data: DataSet | None = None) -> Run:
    """Resolve ``cfg`` and build everything a run is made of (see the module docstring).

    Args:
        cfg: the composed config (presets may still be open).
        overrides: the command line it came from (stored for resume and the run's name).
        data: an in-memory data set to use instead of loading ``cfg.data`` (tests, benchmarks).
    """
    try:
        threads = make_governor(cfg.threads, apply_threads(cfg.threads))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    r = resolve_config(cfg)
    assert r.epochs is not None and r.optim.lr is not None  # resolve_config filled the presets
    world, device = init_world(pick_device(r.device))  # torchrun: this rank's device
    full = data if data is not None else load_dataset(r.data.name, r.data.root,
                                                      download=r.data.download)
    try:
        data, val = split_validation(subset_dataset(full, r.data.train_subset,
                                                    r.data.test_subset), r.data.val_size)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    generators = Generators.seeded(r.seed, world, device)
    loader = _loader(r, data, device, world, generators.data)
    test = EvalSet(to_device(data.test.images, device, r.perf.pin_memory).float().div_(255),
                   data.test.labels.to(device))
    held_out = test if val is None else EvalSet(val.images.to(device).float().div_(255),
                                                val.labels.to(device))
    n_probe = min(r.eval.test_subset, len(test.y))
    train_probe = EvalSet(data.train.images[:n_probe].to(device).float().div_(255),
                          data.train.labels[:n_probe].to(device))
    torch.manual_seed(r.seed)  # model initialisation is the only global-RNG consumer
    model = make_model(r.target.name, data.image_shape, data.num_classes)
    prepare_model(model.to(device), r.perf)
    geometry, eps = make_geometry(r.threat), run_budget(r)
    try:  # components check their settings when built: a bad one is a config error
        train_module = wrap_model(model, world, device, r.sync_batchnorm)
        at_loss = make_at_loss(r.at_loss, LossContext(
            num_train=len(data.train), num_classes=data.num_classes, epochs=r.epochs,
            batches_per_epoch=len(loader), device=device, geometry=geometry))
        problem = at_loss.check_setting(r.policy, geometry)
        if problem:
            raise ValueError(problem)
        context = PolicyContext(
            geometry=geometry, eps=eps, image_shape=data.image_shape,
            num_classes=data.num_classes, num_train=len(data.train), epochs=r.epochs,
            batches_per_epoch=len(loader), device=device, attack_loss=at_loss.attack_loss,
            data=r.data.name, at_loss_name=r.at_loss.name)
        policy = make_policy(r.policy, context).to(device)
        if world.distributed and policy.not_data_parallel:
            raise ValueError(policy.not_data_parallel)
    except (ValueError, DistributedConfigError) as error:
        raise ConfigError(str(error)) from None
    optimizer = torch.optim.SGD(model.parameters(), lr=r.optim.lr, momentum=r.optim.momentum,
                                weight_decay=r.optim.weight_decay)
    scheduler = make_scheduler(optimizer, r.optim.schedule, r.epochs * len(loader),
                               r.optim.milestones, r.optim.gamma, r.optim.cyclic_peak)

    def make_env(requirements: Any) -> AttackEnv:
        config = EnvConfig(geometry=geometry, loss=at_loss.attack_loss, bn_mode=r.bn_mode,
                           requirements=requirements, augmented=bool(r.data.augment),
                           num_classes=data.num_classes)
        return AttackEnv(model, config, data.image_shape, loader.local_batch_size,
                         source=loader)

    target = Target(model, optimizer, scheduler, at_loss, make_env, r.bn_mode, train_module)
    env = make_env(policy.requirements().merge(at_loss.env_requirements))
    distributions = DistributionHistory(max_categories=16)
    for key, grid in policy.grids().items():
        distributions.declare(key, grid)
    return Run(r, config_to_dict(cfg), tuple(overrides), world, device, data, loader, test,
               held_out, "test" if val is None else "val", train_probe, geometry, eps, target,
               env, policy, COMonitor(r.monitor) if r.monitor.enabled else None, generators,
               distributions, threads)


def _loader(r: CotrainConfig, data: DataSet, device: torch.device, world: World,
            generator: torch.Generator) -> DeviceLoader:
    """The training loader (``batch_size`` is the global batch: each rank takes its slice)."""
    try:
        loader = DeviceLoader(data.train, r.batch_size, device, shuffle=True,
                              augment=bool(r.data.augment), drop_last=True, generator=generator,
                              pin_memory=r.perf.pin_memory, shard=(world.rank, world.size))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if len(loader) == 0:
        raise ConfigError(f"batch_size={r.batch_size} exceeds the training set "
                          f"({len(data.train)} samples): accepted 1 to {len(data.train)}")
    return loader
