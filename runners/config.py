"""Typed run configuration, registered as Hydra structured configs (one group per axis).

Groups: ``data``, ``target``, ``policy``, ``at_loss``, ``threat``. An ablation is one switch
(``policy=fgsm_rs``), a field is ``group.field=value`` (``policy.steps=7``), a sweep is a Hydra
multirun (``-m policy=pgd_at,fgsm_rs``). Policies, AT losses and threat geometries come from
their registries, so a new one appears here without edits. Closed option sets are ``Enum``s
(``policy.reward_mode=per_sample``).

Values left as ``None`` mean "the data set's preset" (see :data:`DATA_PRESETS`); the resolved
values are what the run logs as its params.

Every field is checked when the config is composed, before any work (runners/validation.py):
numeric fields against the ``limits`` their config class declares (the set value and the
accepted range in the message), the threat's own fields by its geometry
(:meth:`envs.geometry.base.Geometry.check_config`), categorical fields against their options.
Legal but suspicious values (a budget that erases any image) are logged as warnings.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from hydra import compose, initialize
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, DictConfig, OmegaConf

from learned_at.agents.base import policy_registry
from learned_at.envs.geometry.base import geometry_registry, make_geometry
from learned_at.envs.options import (COUNT, FRACTION, MOMENTUM, NON_NEGATIVE, NON_NEGATIVE_INT,
                                     POSITIVE, Limit)
from learned_at.envs.requirements import BnMode
from learned_at.runners.fast_path import PerfConfig
import learned_at.runners.sparse_recipes  # noqa: F401  (registers the sparse papers' recipes)
from learned_at.runners.recipes import expand_recipes
from learned_at.runners.schedule import Schedule
from learned_at.runners.validation import validate_config
from learned_at.targets.losses.base import at_loss_registry


_log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A bad override: unknown key, unknown option or a value of the wrong type."""


@dataclass(frozen=True)
class DataConfig:
    """Training data.

    Attributes:
        name: ``digits`` (embedded, scikit-learn 8x8), ``mnist``, ``cifar10``, ``cifar100``.
        root: folder holding the files (mnist: the IDX .gz files or MNIST/raw; cifar: the
            python batches or the cifar-10-batches-py folder). Not needed for digits.
        augment: random crop (pad 4) + horizontal flip on the device; None = preset
            (on for CIFAR, off otherwise).
        train_subset: use only the first n training samples (0 = all); for short benchmarks.
        test_subset: use only the first n test samples (0 = all).
        download: download the data set into ``root`` when its files are missing (mnist,
            cifar10, cifar100; needs the optional package torchvision: ``pip install
            '.[vision]'``).
        val_size: hold out the last n training samples (after ``train_subset``) as a
            validation split, not trained on; the per-epoch monitoring (``val/*`` instead of
            ``test/*``, and the CO monitor) then runs on it, the final ``eval/*`` on the test
            set (0 = no split: monitoring on the test set).
    """

    limits: ClassVar[dict[str, Limit]] = {"train_subset": NON_NEGATIVE_INT,
                                          "test_subset": NON_NEGATIVE_INT,
                                          "val_size": NON_NEGATIVE_INT}

    name: str = "digits"
    root: str | None = None
    augment: bool | None = None
    train_subset: int = 0
    test_subset: int = 0
    download: bool = False
    val_size: int = 0


@dataclass(frozen=True)
class TargetConfig:
    """The defended model.

    Attributes:
        name: model id (``auto`` = the data set's preset: digits_cnn, mnist_cnn,
            preact_resnet18).
    """

    name: str = "auto"


@dataclass(frozen=True)
class OptimConfig:
    """Target optimiser (SGD) and learning-rate schedule, stepped per batch.

    Attributes:
        lr: peak learning rate; None = preset.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        schedule: ``piecewise`` (×gamma at each milestone), ``cyclic`` (0 → lr → 0, linear,
            peak at ``cyclic_peak`` of training) or ``constant``.
        milestones: piecewise milestones as fractions of training.
        gamma: piecewise decay factor.
        cyclic_peak: where the cyclic schedule peaks, as a fraction of training.
    """

    limits: ClassVar[dict[str, Limit]] = {
        "lr": POSITIVE, "momentum": MOMENTUM, "weight_decay": NON_NEGATIVE,
        "milestones": FRACTION, "gamma": POSITIVE, "cyclic_peak": FRACTION}

    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = Schedule.piecewise
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1
    cyclic_peak: float = 0.4


@dataclass(frozen=True)
class EvalConfig:
    """Per-epoch monitoring and the final evaluation.

    Attributes:
        test_subset: fixed test samples for the per-epoch ``test/pgd_acc`` (PGD-10; the
            validation split's ``val/pgd_acc`` with ``data.val_size``).
        epoch_pgd_steps: PGD steps of the per-epoch monitor.
        final_pgd_steps: PGD steps of the final ``eval/pgd<k>_acc`` on the whole test set.
        final_restarts: restarts of the final PGD.
        batch_size: evaluation batch size.
    """

    limits: ClassVar[dict[str, Limit]] = {
        "test_subset": COUNT, "epoch_pgd_steps": COUNT, "final_pgd_steps": COUNT,
        "final_restarts": COUNT, "batch_size": COUNT}

    test_subset: int = 512
    epoch_pgd_steps: int = 10
    final_pgd_steps: int = 20
    final_restarts: int = 1
    batch_size: int = 500


@dataclass(frozen=True)
class MonitorConfig:
    """Catastrophic-overfitting monitor (runners/co_monitor.py).

    Attributes:
        enabled: run the monitor after every epoch.
        train_subset: fixed training samples (the first n) for ``monitor/train_pgd_acc``;
            None = ``eval.test_subset`` (512 by default).
        test_subset: fixed test samples (the first n) for the test accuracies; None =
            ``eval.test_subset`` (then the runner's ``test/pgd_acc`` is reused).
        pgd_steps: PGD iterations (α = ε/4, random start).
        drop_ratio: CO when test PGD accuracy falls below this fraction of the previous
            epoch's ...
        floor: ... or below this absolute value ...
        fgsm_keep: ... while test FGSM accuracy stays at least this fraction of the
            previous epoch's ...
        min_gap: ... and at least this much above the test PGD accuracy.
        keep_best: save ``checkpoints/best.pt`` at the best test PGD accuracy.
        stop_on_co: stop training after the first epoch flagged as CO.
    """

    limits: ClassVar[dict[str, Limit]] = {
        "train_subset": COUNT, "test_subset": COUNT, "pgd_steps": COUNT, "drop_ratio": FRACTION,
        "floor": FRACTION, "fgsm_keep": FRACTION, "min_gap": FRACTION}

    enabled: bool = True
    train_subset: int | None = None
    test_subset: int | None = None
    pgd_steps: int = 10
    drop_ratio: float = 0.5
    floor: float = 0.05
    fgsm_keep: float = 0.8
    min_gap: float = 0.1
    keep_best: bool = False
    stop_on_co: bool = False


@dataclass(frozen=True)
class TrackingConfig:
    """How a run is tracked in MLflow.

    Attributes:
        system_metrics: log MLflow's system metrics (``system/*``: CPU, memory, disk, network;
            GPU with nvidia-ml-py) while the run trains.
        system_metrics_interval_s: seconds between two system-metric samples.
        plot_every: redraw the distribution heat maps every this many epochs and after the
            last one (0 = never; each costs a matplotlib render per policy key).
        log_model: log the final target (and the best one, with ``monitor.keep_best``) as an
            MLflow model, listed in the experiment's Models tab.
        register_as: also register the final model in the Model Registry under this name
            (a new version per run); None = not registered.
    """

    limits: ClassVar[dict[str, Limit]] = {"system_metrics_interval_s": POSITIVE,
                                          "plot_every": NON_NEGATIVE_INT}

    system_metrics: bool = True
    system_metrics_interval_s: float = 10.0
    plot_every: int = 1
    log_model: bool = True
    register_as: str | None = None


@dataclass(frozen=True)
class CotrainConfig:
    """One co-training run.

    Attributes:
        epochs: training epochs; None = preset.
        batch_size: training batch size; under ``torchrun`` the global batch, split evenly
            over the processes (a multiple of their number).
        seed: seed of every named generator (data order, augmentation, attack starts, policy).
        device: ``auto`` (cuda if available), ``cpu`` or ``cuda``.
        bn_mode: BatchNorm mode of the target during attack steps (``eval`` leaves its running
            statistics untouched; ``train`` attacks through batch statistics).
        resume: MLflow run id of a run to continue from its last checkpoint (it takes the
            run's own config; only epochs, progress, device, checkpoint_dir,
            checkpoint_every_s and tracking.* may be given with it; ``epochs=N`` extends or
            re-plans the run to N epochs).
        experiment: MLflow experiment name.
        run_name: MLflow run name (default: ``<policy>-<data>-<target>``, the fields set on
            the command line and the seed).
        checkpoint_dir: local folder for checkpoints (one sub-folder per run id).
        checkpoint_every_s: also write a checkpoint every this many seconds, at the end of a
            batch (0 = only at the end of each epoch and on SIGTERM/SIGINT).
        progress: show progress bars (per-epoch summaries are logged either way).
        monitor: the catastrophic-overfitting monitor (runners/co_monitor.py).
        tracking: MLflow tracking (system metrics, the model, registration).
        threads: CPU threads of torch's intra-op pool; 0 = the CPUs this process may use
            (affinity, cgroup quota, shared among a torchrun job's local ranks), never more
            than torch's default (runners/threads.py).
        perf: GPU fast-path switches, all off by default (bf16 autocast, channels_last,
            torch.compile, pinned copies).
        sync_batchnorm: under ``torchrun`` on CUDA, BatchNorm layers use the global batch's
            statistics (SyncBatchNorm); off = each rank's own slice (refused on CPU, where
            PyTorch has no SyncBatchNorm; no effect in one process).
    """

    limits: ClassVar[dict[str, Limit]] = {
        "epochs": COUNT, "batch_size": COUNT, "seed": NON_NEGATIVE_INT,
        "checkpoint_every_s": NON_NEGATIVE, "threads": NON_NEGATIVE_INT}

    defaults: list[Any] = field(default_factory=lambda: [
        "_self_", {"data": "digits"}, {"target": "auto"}, {"policy": "las_at"},
        {"at_loss": "ce"}, {"threat": "linf"}])
    data: Any = MISSING
    target: Any = MISSING
    policy: Any = MISSING
    at_loss: Any = MISSING
    threat: Any = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    epochs: int | None = None
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    bn_mode: BnMode = BnMode.eval
    resume: str | None = None
    experiment: str = "learned-at"
    run_name: str | None = None
    checkpoint_dir: str = "checkpoints"
    checkpoint_every_s: float = 600.0
    progress: bool = True
    threads: int = 0
    perf: PerfConfig = field(default_factory=PerfConfig)
    sync_batchnorm: bool = False


#: per-data-set defaults for the ``None`` fields (the budget's preset is the geometry's).
DATA_PRESETS: dict[str, dict[str, Any]] = {
    "digits": {"target": "digits_cnn", "epochs": 30, "lr": 0.1, "augment": False,
               "image_shape": (1, 8, 8)},
    "mnist": {"target": "mnist_cnn", "epochs": 20, "lr": 0.01, "augment": False,
              "image_shape": (1, 28, 28)},
    "cifar10": {"target": "preact_resnet18", "epochs": 110, "lr": 0.1, "augment": True,
                "image_shape": (3, 32, 32)},
    "cifar100": {"target": "preact_resnet18", "epochs": 110, "lr": 0.1, "augment": True,
                 "image_shape": (3, 32, 32)},
}

GROUP_NAMES = ("data", "target", "policy", "at_loss", "threat")


def _writable(node: Any) -> None:
    if isinstance(node, DictConfig):
        OmegaConf.set_readonly(node, False)
        for key in node.keys():
            _writable(node._get_node(key))


def _node(obj: Any) -> DictConfig:
    """A writable structured node (Hydra cannot merge overrides into frozen dataclasses).

    The dataclasses stay frozen for the code: ``OmegaConf.to_object`` rebuilds them.
    """
    node = OmegaConf.structured(obj)
    _writable(node)
    return node


def register_configs() -> None:
    """Store every group option in Hydra's ConfigStore (idempotent)."""
    from learned_at.targets.models import MODELS

    cs = ConfigStore.instance()
    cs.store(name="cotrain", node=_node(CotrainConfig))
    for name in DATA_PRESETS:
        cs.store(group="data", name=name, node=_node(DataConfig(name=name)))
    for name in ["auto", *MODELS]:
        cs.store(group="target", name=name, node=_node(TargetConfig(name=name)))
    for name, (cfg_cls, _) in policy_registry().items():
        cs.store(group="policy", name=name, node=_node(cfg_cls()))
    for name, (cfg_cls, _) in at_loss_registry().items():
        cs.store(group="at_loss", name=name, node=_node(cfg_cls()))
    for name, (cfg_cls, _) in geometry_registry().items():
        cs.store(group="threat", name=name, node=_node(cfg_cls()))


def group_options() -> dict[str, list[str]]:
    """Valid options per config group."""
    from learned_at.targets.models import MODELS

    return {
        "data": list(DATA_PRESETS), "target": ["auto", *MODELS],
        "policy": sorted(policy_registry()), "at_loss": sorted(at_loss_registry()),
        "threat": sorted(geometry_registry()),
    }


def _valid_keys(cfg: DictConfig, path: str) -> list[str]:
    node = OmegaConf.select(cfg, path) if path else cfg
    if not isinstance(node, DictConfig):
        return []
    return sorted(k for k in node.keys() if k != "defaults")


def _explain(overrides: list[str], error: Exception) -> ConfigError:
    """Turn a Hydra composition error into one that names the problem and the valid choices."""
    options = group_options()
    groups = [o for o in overrides if o.split("=", 1)[0] in options and "=" in o]
    for o in groups:
        g, v = o.split("=", 1)
        if v not in options[g]:
            return ConfigError(f"unknown option {v!r} for '{g}'; valid: {', '.join(options[g])}")
    try:
        base = _compose(groups)
    except Exception:  # pragma: no cover - groups alone always compose once validated
        return ConfigError(str(error))
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if o in groups or key.startswith("hydra"):
            continue
        parent, _, leaf = key.rpartition(".")
        if leaf not in _valid_keys(base, parent):
            where = f"'{parent}'" if parent else "the top level"
            return ConfigError(f"unknown config key {key!r}; valid keys in {where}: "
                               f"{', '.join(_valid_keys(base, parent))}")
    cause = error.__cause__ or error
    key = getattr(cause, "full_key", None)
    first = str(getattr(cause, "msg", None) or cause).strip().splitlines()[0]
    if key:  # an OmegaConf type error: "Value 'abc' ... could not be converted to Integer"
        given = next((o.split("=", 1)[1] for o in overrides
                      if o.split("=", 1)[0].lstrip("+~") == key.split("[")[0]), None)
        shown = f"{key}={given}" if given is not None else key
        return ConfigError(f"{shown}: {_plain_type_message(first)}")
    return ConfigError(f"bad override in {' '.join(overrides)}: {first}")


def _plain_type_message(message: str) -> str:
    """OmegaConf's type errors in the words of the command line."""
    m = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]", message)
    if m:
        return f"unknown option {m.group(1)!r}; valid: {m.group(2)}"
    m = re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", message)
    if m:
        kind = m.group(2).lower()
        return f"expected {'an' if kind[0] in 'aeiou' else 'a'} {kind}, got {m.group(1)!r}"
    m = re.match(r"Value '(.*)' is not a valid bool", message)
    if m:
        return f"expected true or false, got {m.group(1)!r}"
    return message


def _compose(overrides: list[str]) -> DictConfig:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize(version_base=None, config_path=None):
        return compose("cotrain", overrides=overrides)


def compose_config(overrides: list[str] | None = None) -> CotrainConfig:
    """Compose the run config from ``key=value`` overrides (Hydra syntax; ``recipe=<name>``
    expands to the recipe's overrides, see runners/recipes.py).

    Raises:
        ConfigError: naming the unknown key/option and listing the valid ones.
    """
    try:
        overrides = expand_recipes(list(overrides or []))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    overrides = policy_loss_defaults(overrides) + overrides
    try:
        cfg = _compose(overrides)
    except Exception as error:  # Hydra raises several exception types for bad overrides
        raise _explain(overrides, error) from None
    try:
        obj = to_object(cfg)
    except ValueError as error:  # a config dataclass rejected a value in __post_init__
        raise ConfigError(str(error)) from None
    problems, warnings = validate_config(obj, DATA_PRESETS[obj.data.name]["image_shape"])
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" \
            if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    for warning in warnings:
        _log.warning(warning)
    return obj


def policy_loss_defaults(overrides: list[str]) -> list[str]:
    """The chosen policy's default AT loss (``PolicyConfig.at_loss_defaults``), unless the
    overrides pick ``at_loss`` themselves; placed before them, so ``at_loss.<field>=`` given
    by the user still wins."""
    if any(o.split("=", 1)[0].lstrip("+~") == "at_loss" for o in overrides):
        return []
    chosen = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == "policy"]
    name = chosen[-1] if chosen else _default_option("policy")
    entry = policy_registry().get(name)
    return list(getattr(entry[0], "at_loss_defaults", ())) if entry else []


def _default_option(group: str) -> str:
    """The option of ``group`` in :class:`CotrainConfig`'s defaults list."""
    for item in CotrainConfig().defaults:
        if isinstance(item, dict) and group in item:
            return str(item[group])
    return ""


def to_object(cfg: DictConfig) -> CotrainConfig:
    """DictConfig -> typed :class:`CotrainConfig` (group nodes become their dataclasses)."""
    obj = OmegaConf.to_object(cfg)
    return dataclasses.replace(obj, defaults=[])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Resolved:
    """Preset-resolved values of a run (what ``None`` fields stand for)."""

    target: str
    eps: float
    epochs: int
    lr: float
    augment: bool


def resolve(cfg: CotrainConfig) -> Resolved:
    """Fill the ``None`` fields from :data:`DATA_PRESETS`."""
    preset = DATA_PRESETS[cfg.data.name]
    geometry = make_geometry(cfg.threat)
    budget = geometry.nominal_budget()  # threat.eps, or the geometry's own field (L0: threat.k)
    return Resolved(
        target=preset["target"] if cfg.target.name == "auto" else cfg.target.name,
        eps=geometry.default_budget(cfg.data.name) if budget is None else budget,
        epochs=preset["epochs"] if cfg.epochs is None else int(cfg.epochs),
        lr=preset["lr"] if cfg.optim.lr is None else float(cfg.optim.lr),
        augment=preset["augment"] if cfg.data.augment is None else bool(cfg.data.augment),
    )


def plain(value: Any) -> Any:
    """Enums to their values, recursively through dicts and lists (plain python for checkpoints,
    which load with ``weights_only``, and for params)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def config_to_dict(cfg: CotrainConfig) -> dict[str, Any]:
    """Plain nested dict of the config (for params and checkpoints)."""
    d = dataclasses.asdict(cfg)
    d.pop("defaults", None)
    return plain(d)
