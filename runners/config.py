"""Typed run configuration, registered as Hydra structured configs (one group per axis).

Groups: ``data``, ``target``, ``at_loss``, ``threat``, ``policy`` and ``recipe``. An ablation is
one switch (``policy=fgsm_rs``), a field is ``group.field=value`` (``policy.steps=7``), a sweep
is a Hydra multirun (``-m policy=pgd_at,fgsm_rs``). Policies, AT losses and threat geometries
come from their registries, so a new one appears here without edits; recipes
(:mod:`runners.recipes`) are the ``recipe`` group, applied after the other groups, so every
override on the command line wins over them. A policy that is a whole method picks its own AT
loss (:attr:`agents.base.PolicyConfig.default_at_loss`: Fast-LS-ℓ0 sTRADES, FGSM-PGI its
regulariser) through its option's defaults list; ``at_loss=`` on the command line still wins.

Fields left ``None`` mean "a preset": the data set's (:data:`runners.presets.DATA_PRESETS`),
the geometry's, or the policy's; :func:`runners.presets.resolve_config` fills every one of them
once, when the run is built, and the run logs the result. Every field is checked before any
work (:mod:`runners.validation`). Each field's help text is its ``doc`` metadata
(:func:`envs.options.setting`), which ``--help`` lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig, OmegaConf

from learned_at.envs.options import (COUNT, FRACTION, MOMENTUM, NON_NEGATIVE, NON_NEGATIVE_INT,
                                     POSITIVE, Limit, setting)
from learned_at.envs.requirements import BnMode
from learned_at.runners.fast_path import PerfConfig
from learned_at.runners.schedule import Schedule

__all__ = ["CotrainConfig", "ConfigError", "DataConfig", "EvalConfig", "GROUP_NAMES",
           "MonitorConfig", "OptimConfig", "TargetConfig", "TrackingConfig", "config_to_dict",
           "plain", "structured_node"]


class ConfigError(ValueError):
    """A bad setting: unknown key or option, a value of the wrong type or out of range."""


@dataclass(frozen=True)
class DataConfig:
    """Training data."""

    limits: ClassVar[dict[str, Limit]] = {"train_subset": NON_NEGATIVE_INT,
                                          "test_subset": NON_NEGATIVE_INT,
                                          "val_size": NON_NEGATIVE_INT}

    name: str = setting("digits", "digits (embedded, scikit-learn 8x8), mnist, cifar10, cifar100")
    root: str | None = setting(None, "folder holding the files (mnist: the IDX .gz files or "
                               "MNIST/raw; cifar: the python batches or the cifar-10-batches-py "
                               "folder); not needed for digits")
    augment: bool | None = setting(None, "random crop (pad 4) + horizontal flip on the device; "
                                   "null = preset (on for CIFAR, off otherwise)")
    train_subset: int = setting(0, "use only the first n training samples (0 = all)")
    test_subset: int = setting(0, "use only the first n test samples (0 = all)")
    download: bool = setting(False, "download a missing mnist / cifar10 / cifar100 into root "
                             "(needs the optional torchvision: pip install '.[vision]')")
    val_size: int = setting(0, "hold out the last n training samples (after train_subset) as a "
                            "validation split: per-epoch monitoring (val/*, the CO monitor) runs "
                            "on it, the final eval/* on the test set (0 = no split)")


@dataclass(frozen=True)
class TargetConfig:
    """The defended model."""

    name: str = setting("auto", "model id; auto = the data set's preset (digits_cnn, "
                        "mnist_cnn, preact_resnet18)")


@dataclass(frozen=True)
class OptimConfig:
    """Target optimiser (SGD) and learning-rate schedule, stepped per batch."""

    limits: ClassVar[dict[str, Limit]] = {
        "lr": POSITIVE, "momentum": MOMENTUM, "weight_decay": NON_NEGATIVE,
        "milestones": FRACTION, "gamma": POSITIVE, "cyclic_peak": FRACTION}

    lr: float | None = setting(None, "peak learning rate; null = preset")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(5e-4, "L2 weight decay")
    schedule: Schedule = setting(Schedule.piecewise, "piecewise (x gamma at each milestone), "
                                 "cyclic (0 -> lr -> 0, linear, peak at cyclic_peak) or constant")
    milestones: list[float] = setting(doc="piecewise milestones as fractions of training",
                                      factory=lambda: [0.5, 0.75])
    gamma: float = setting(0.1, "piecewise decay factor")
    cyclic_peak: float = setting(0.4, "where the cyclic schedule peaks, as a fraction of "
                                 "training")


@dataclass(frozen=True)
class EvalConfig:
    """Per-epoch monitoring and the final evaluation."""

    limits: ClassVar[dict[str, Limit]] = {
        "test_subset": COUNT, "epoch_pgd_steps": COUNT, "final_pgd_steps": COUNT,
        "final_restarts": COUNT, "batch_size": COUNT}

    test_subset: int = setting(512, "fixed held-out samples of the per-epoch test/pgd_acc "
                               "(val/pgd_acc with data.val_size)")
    epoch_pgd_steps: int = setting(10, "PGD steps of the per-epoch monitor")
    final_pgd_steps: int = setting(20, "PGD steps of the final eval/pgd<k>_acc on the whole "
                                   "test set")
    final_restarts: int = setting(1, "restarts of the final PGD")
    batch_size: int = setting(500, "evaluation batch size")


@dataclass(frozen=True)
class MonitorConfig:
    """Catastrophic-overfitting monitor (runners/co_monitor.py)."""

    limits: ClassVar[dict[str, Limit]] = {
        "train_subset": COUNT, "test_subset": COUNT, "pgd_steps": COUNT, "drop_ratio": FRACTION,
        "floor": FRACTION, "fgsm_keep": FRACTION, "min_gap": FRACTION}

    enabled: bool = setting(True, "run the monitor after every epoch")
    train_subset: int | None = setting(None, "fixed training samples (the first n) of "
                                       "monitor/train_pgd_acc; null = eval.test_subset")
    test_subset: int | None = setting(None, "fixed held-out samples (the first n) of the test "
                                      "accuracies; null = eval.test_subset")
    pgd_steps: int = setting(10, "PGD iterations (alpha = eps/4, random start)")
    drop_ratio: float = setting(0.5, "CO when held-out PGD accuracy falls below this fraction "
                                "of the previous epoch's ...")
    floor: float = setting(0.05, "... or below this absolute value ...")
    fgsm_keep: float = setting(0.8, "... while FGSM accuracy stays at least this fraction of "
                               "the previous epoch's ...")
    min_gap: float = setting(0.1, "... and at least this much above the PGD accuracy")
    keep_best: bool = setting(False, "save checkpoints/best.pt at the best held-out PGD "
                              "accuracy")
    stop_on_co: bool = setting(False, "stop training after the first epoch flagged as CO")


@dataclass(frozen=True)
class TrackingConfig:
    """How a run is tracked in MLflow."""

    limits: ClassVar[dict[str, Limit]] = {"system_metrics_interval_s": POSITIVE,
                                          "plot_every": NON_NEGATIVE_INT,
                                          "lease_s": Limit(10)}

    system_metrics: bool = setting(True, "log MLflow's system metrics (system/*: CPU, memory, "
                                   "disk, network; GPU with nvidia-ml-py) while training")
    system_metrics_interval_s: float = setting(10.0, "seconds between two system-metric "
                                               "samples")
    plot_every: int = setting(1, "redraw the distribution heat maps every this many epochs and "
                              "after the last one (0 = never)")
    log_model: bool = setting(True, "log the final target (and the best one, with "
                              "monitor.keep_best) as an MLflow model of the run")
    register_as: str = setting("", "also register the final model in the Model Registry "
                               "under this name (empty = not registered)")
    lease_s: float = setting(300.0, "seconds the run's writer lease lasts unless renewed "
                             "(renewed every lease_s/5 while training): after kill -9 or a "
                             "lost node, a resume on another machine waits this long")


#: the order of the groups in the defaults list: ``at_loss`` before ``policy`` (a policy's
#: option may override the AT-loss choice), ``recipe`` last (it overrides the others).
GROUP_NAMES = ("data", "target", "at_loss", "threat", "policy")


def _defaults() -> list[Any]:
    return ["_self_", {"data": "digits"}, {"target": "auto"}, {"at_loss": "ce"},
            {"threat": "linf"}, {"policy": "las_at"}, {"recipe": None}]


@dataclass(frozen=True)
class CotrainConfig:
    """One co-training run."""

    limits: ClassVar[dict[str, Limit]] = {
        "epochs": COUNT, "batch_size": COUNT, "seed": NON_NEGATIVE_INT,
        "checkpoint_every_s": NON_NEGATIVE, "threads": NON_NEGATIVE_INT}

    defaults: list[Any] = field(default_factory=_defaults)
    data: Any = MISSING
    target: Any = MISSING
    policy: Any = MISSING
    at_loss: Any = MISSING
    threat: Any = MISSING
    optim: OptimConfig = setting(doc="the target's optimiser", factory=OptimConfig)
    eval: EvalConfig = setting(doc="per-epoch monitoring and final evaluation",
                               factory=EvalConfig)
    monitor: MonitorConfig = setting(doc="the catastrophic-overfitting monitor",
                                     factory=MonitorConfig)
    tracking: TrackingConfig = setting(doc="MLflow tracking", factory=TrackingConfig)
    epochs: int | None = setting(None, "training epochs; null = preset")
    batch_size: int = setting(128, "training batch size; under torchrun the global batch, split "
                              "evenly over the processes")
    seed: int = setting(0, "seed of every named generator (data order, augmentation, attack "
                        "starts, policy) and of the model's initialisation")
    device: str = setting("auto", "auto (cuda if available), cpu, cuda or cuda:<n>")
    bn_mode: BnMode = setting(BnMode.eval, "BatchNorm mode of the target during attack steps "
                              "(eval leaves its running statistics untouched)")
    resume: str = setting("", "MLflow run id of a run to continue from its last checkpoint; "
                          "the run keeps its own config (an override equal to the run's value "
                          "is accepted, a different one refused, except epochs, progress, "
                          "device, threads, checkpoint_dir, checkpoint_every_s and tracking.*; "
                          "epochs=N extends or re-plans the run)")
    experiment: str = setting("learned-at", "MLflow experiment name")
    run_name: str = setting("", "MLflow run name (empty: <policy>-<data>-<target>, the fields "
                            "set on the command line and the seed)")
    checkpoint_dir: str = setting("checkpoints", "local folder for checkpoints (one sub-folder "
                                  "per run id)")
    checkpoint_every_s: float = setting(600.0, "also write a checkpoint every this many seconds, "
                                        "at the end of a batch (0 = only at epoch ends and on "
                                        "SIGTERM/SIGINT)")
    progress: bool = setting(True, "show progress bars (per-epoch summaries are logged either "
                             "way)")
    threads: int = setting(0, "CPU threads of torch's intra-op pool; 0 = the CPUs this process "
                           "may use (runners/threads.py)")
    perf: PerfConfig = setting(doc="GPU fast-path switches (all off)", factory=PerfConfig)
    sync_batchnorm: bool = setting(False, "under torchrun on CUDA, BatchNorm uses the global "
                                   "batch's statistics (refused on CPU)")


def structured_node(obj: Any) -> DictConfig:
    """A writable structured node of a config dataclass (class or instance): Hydra merges
    overrides into it, and ``OmegaConf.to_object`` turns it back into the frozen dataclass."""
    node = OmegaConf.structured(obj)
    _writable(node)
    return node


def _writable(node: Any) -> None:
    if isinstance(node, DictConfig):
        OmegaConf.set_readonly(node, False)
        for key in node.keys():
            _writable(node._get_node(key))


def plain(value: Any) -> Any:
    """Enums to their values, recursively through dicts and lists (plain python for
    checkpoints, which load with ``weights_only``, and for params)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def config_to_dict(cfg: CotrainConfig) -> dict[str, Any]:
    """Plain nested dict of the config (params, checkpoints, ``--cfg job``)."""
    d = dataclasses.asdict(cfg)
    d.pop("defaults", None)
    return plain(d)
