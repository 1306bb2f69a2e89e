"""Presets, resolved once: every ``None`` / ``auto`` field of a run's config gets its value here.

One place per concept:

* the data set's presets (:data:`DATA_PRESETS`: target model, epochs, learning rate,
  augmentation) and the runner's own (the CO monitor's subsets default to ``eval.test_subset``);
* the budget: ``threat.eps`` (L0: ``threat.k``), else the geometry's per-data-set default
  (:meth:`envs.geometry.base.Geometry.default_budget`);
* the policy's presets: its config's :meth:`agents.base.PolicyConfig.resolve` (LAS-AT's grids
  and learner, Dynamic's c_max, ...);
* the AT loss's: :meth:`targets.losses.base.ATLossConfig.resolve` (the geometry's defaults,
  e.g. sTRADES' β = 3 under L0; the soft labels' warm-up), the soft labels' ``enabled`` from
  the policy when the run trains with the policy's own AT loss
  (:attr:`agents.base.PolicyConfig.soft_labels`, ``default_at_loss``), and the label smoothing,
  which is
  one setting shared by the AT loss and a policy that carries its recipe's
  (``target_smoothing``: LAS-AT, FGSM-SDI, FGSM-PGI): ``policy.true_class_prob`` and
  ``at_loss.true_class_prob`` may each be given; a preset yields to a value the user gave, and
  two different given values stop the run with one line naming both.

:func:`resolve_config` returns the run's config with every preset filled; the run is built
from it and logs it (params, ``config/resolved.yaml``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from learned_at.agents.base import PolicyConfig, PresetContext
from learned_at.envs.geometry.base import Geometry, make_geometry
from learned_at.runners.config import ConfigError, CotrainConfig

__all__ = ["DATA_PRESETS", "resolve_config", "run_budget"]

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


def run_budget(cfg: CotrainConfig, geometry: Geometry | None = None) -> float:
    """The run's nominal budget: the threat's own field, else the data set's preset."""
    geometry = geometry if geometry is not None else make_geometry(cfg.threat)
    budget = geometry.nominal_budget()
    return geometry.default_budget(cfg.data.name) if budget is None else budget


def resolve_config(cfg: CotrainConfig) -> CotrainConfig:
    """``cfg`` with every preset field filled (see the module docstring).

    Raises:
        ConfigError: a preset that does not exist for the setting, or the label smoothing
            given twice with different values.
    """
    preset = DATA_PRESETS[cfg.data.name]
    try:
        geometry = make_geometry(cfg.threat)
        eps = run_budget(cfg, geometry)
        epochs = preset["epochs"] if cfg.epochs is None else int(cfg.epochs)
        context = PresetContext(geometry, eps, cfg.data.name, cfg.at_loss.name,
                                tuple(preset["image_shape"]))
        policy = cfg.policy.resolve(context)
        at_loss = cfg.at_loss.resolve(geometry, epochs)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    policy, at_loss = _shared_smoothing(cfg.policy, policy, at_loss)
    policy = _follow_smoothing(policy)
    if at_loss.soft_labels.enabled is None:  # the policy's preset, with the policy's own loss
        own = type(policy).soft_labels and at_loss.name == type(policy).default_at_loss
        at_loss = dataclasses.replace(at_loss, soft_labels=dataclasses.replace(
            at_loss.soft_labels, enabled=own))
    r = dataclasses.replace
    monitor, test_subset = cfg.monitor, cfg.eval.test_subset
    return r(cfg, policy=policy, at_loss=at_loss, epochs=epochs,
             threat=geometry.with_budget(eps).config,
             target=r(cfg.target, name=preset["target"] if cfg.target.name == "auto"
                      else cfg.target.name),
             optim=r(cfg.optim, lr=preset["lr"] if cfg.optim.lr is None else cfg.optim.lr),
             data=r(cfg.data, augment=preset["augment"] if cfg.data.augment is None
                    else cfg.data.augment),
             monitor=r(monitor, train_subset=_or(monitor.train_subset, test_subset),
                       test_subset=_or(monitor.test_subset, test_subset)))


def _or(value: Any, preset: Any) -> Any:
    return preset if value is None else value


def _follow_smoothing(policy: PolicyConfig) -> PolicyConfig:
    """The policy's ``follows_smoothing`` fields left None: its settled label smoothing."""
    unset = {name: policy.true_class_prob  # type: ignore[attr-defined]  # target_smoothing
             for name in type(policy).follows_smoothing if getattr(policy, name) is None}
    return dataclasses.replace(policy, **unset) if unset else policy


def _shared_smoothing(given: PolicyConfig, policy: PolicyConfig, at_loss: Any
                      ) -> tuple[PolicyConfig, Any]:
    """One label smoothing for the AT loss and a policy that carries its own (module doc)."""
    loss_value = at_loss.true_class_prob
    if not type(policy).target_smoothing:
        return policy, dataclasses.replace(at_loss, true_class_prob=_or(loss_value, 1.0))
    policy_value = float(policy.true_class_prob)  # type: ignore[attr-defined]
    if loss_value is None:
        return policy, dataclasses.replace(at_loss, true_class_prob=policy_value)
    if given.true_class_prob is None:  # type: ignore[attr-defined]  # the preset yields
        return dataclasses.replace(  # type: ignore[call-arg]  # a target_smoothing policy's field
            policy, true_class_prob=float(loss_value)), at_loss
    if float(loss_value) != policy_value:
        raise ConfigError(
            f"at_loss.true_class_prob={loss_value:g} and policy.true_class_prob="
            f"{policy_value:g} disagree: policy={policy.name} applies its label smoothing to the "
            "target's AT step too, so they are one setting; give one of them")
    return policy, at_loss
