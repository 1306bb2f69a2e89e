"""A command line's config: composed by Hydra, checked once, explained in one line when wrong.

The command-line tools compose through ``hydra.main`` (:mod:`runners.cli`); code composes the
same config with :func:`compose_config` (Hydra's public Compose API, the way Hydra
recommends for tests and notebooks). Both go through :func:`to_config`, which turns the
composed ``DictConfig`` into the typed, frozen :class:`~runners.config.CotrainConfig` and runs
every check (:mod:`runners.validation`). :func:`explain` turns Hydra's and OmegaConf's
composition errors (by their types and fields, no message parsing) into one line that names
the problem and the valid choices.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from enum import Enum
from collections.abc import Sequence

from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from learned_at.runners.config import GROUP_NAMES, ConfigError, CotrainConfig
from learned_at.runners.config_store import CONFIG_NAME, register_configs
from learned_at.runners.presets import DATA_PRESETS
from learned_at.runners.validation import validate_config

__all__ = ["compose_config", "explain", "to_config"]

_log = logging.getLogger(__name__)


def compose_config(overrides: Sequence[str] = ()) -> CotrainConfig:
    """The checked co-training config of ``overrides`` (Hydra override syntax, e.g.
    ``["policy=pgd_at", "policy.steps=3", "recipe=fast_bat_cifar10"]``).

    Raises:
        ConfigError: naming the unknown key or option (and the valid ones), the bad value and
            what is accepted.
    """
    try:
        cfg = _compose(list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(explain(error, overrides)) from None
    return to_config(cfg)


def to_config(cfg: DictConfig) -> CotrainConfig:
    """The typed config of a composed one, every field checked (warnings are logged)."""
    try:
        obj: CotrainConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except (OmegaConfBaseException, ValueError) as error:  # a dataclass's __post_init__
        raise ConfigError(_first_line(error)) from None
    obj = dataclasses.replace(obj, defaults=[])
    problems, warnings = validate_config(obj, DATA_PRESETS[obj.data.name]["image_shape"])
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" \
            if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    for warning in warnings:
        _log.warning(warning)
    return obj


def explain(error: BaseException, overrides: Sequence[str], config_name: str = CONFIG_NAME
            ) -> str:
    """One line for a composition error: the unknown option or key with the valid ones, the
    value that does not fit its field, or the override that does not parse."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        valid = ", ".join(o for o in (error.options or []))
        return f"unknown option {option!r} for '{group}'; valid: {valid}"
    if isinstance(error, OverrideParseException):
        return f"cannot read the override(s) {' '.join(overrides)!r}: {_first_line(error)}"
    cause = error.__cause__ or error
    key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
        parent, _, leaf = str(key).rpartition(".")
        where = f"'{parent}'" if parent else "the top level"
        valid = ", ".join(_valid_keys(overrides, parent, config_name))
        return f"unknown config key {key!r}; valid keys in {where}: {valid}"
    if key:  # a value that does not fit its field's type
        given = next((o.split("=", 1)[1] for o in overrides
                      if o.split("=", 1)[0].lstrip("+~") == str(key)), None)
        shown = f"{key}={given}" if given is not None else str(key)
        return f"{shown}: {_expected(overrides, str(key), config_name)}"
    return _first_line(error)


def _expected(overrides: Sequence[str], key: str, config_name: str) -> str:
    """What the field at ``key`` accepts, from its declared type."""
    base = _base(overrides, config_name)
    parent, _, leaf = key.rpartition(".")
    node = None if base is None else (OmegaConf.select(base, parent) if parent else base)
    cls = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    kinds = [t for t in typing.get_args(hints.get(leaf)) or [hints.get(leaf)]
             if t is not type(None)]
    kind = kinds[0] if kinds else None
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "unknown option; valid: " + ", ".join(str(m.value) for m in kind)
    names = {bool: "expected true or false", int: "expected an integer", float: "expected a number"}
    return names.get(kind, "a value of the wrong type")  # type: ignore[arg-type]


def _valid_keys(overrides: Sequence[str], parent: str, config_name: str) -> list[str]:
    base = _base(overrides, config_name)
    node = base if not parent or base is None else OmegaConf.select(base, parent)
    if not isinstance(node, DictConfig):
        return []
    return sorted(str(k) for k in node.keys() if k != "defaults")


def _base(overrides: Sequence[str], config_name: str) -> DictConfig | None:
    """The config composed from the group choices alone (what the other overrides act on)."""
    groups = (*GROUP_NAMES, "recipe")
    choices = [o for o in overrides if o.split("=", 1)[0] in groups]
    try:
        return _compose(choices, config_name)
    except (HydraException, OmegaConfBaseException):
        return None


def _compose(overrides: list[str], config_name: str = CONFIG_NAME) -> DictConfig:
    """Hydra's Compose API over the project's config store (inside a running Hydra app, e.g.
    a resume composing the run's own command line, its initialised instance is used)."""
    register_configs()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=overrides)
    with initialize(version_base="1.3", config_path=None):
        return compose(config_name, overrides=overrides)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "msg", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
