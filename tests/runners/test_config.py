"""Config composition: groups, overrides, presets and errors that list the valid choices."""

import dataclasses
import logging
import re

import pytest

from learned_at.runners.compose import compose_config
from learned_at.runners.config import ConfigError
from learned_at.runners.presets import resolve_config


def test_defaults_are_the_embedded_run():
    cfg = compose_config([])
    r = resolve_config(cfg)
    assert (cfg.data.name, cfg.policy.name, cfg.at_loss.name, cfg.threat.name) == \
        ("digits", "las_at", "ce", "linf")
    assert (r.target.name, r.threat.eps, r.data.augment, r.epochs) == ("digits_cnn", 0.2, False, 30)


def _none_fields(node, prefix=""):
    """Dotted names of the fields of a config (and of the configs nested in it) that are None."""
    out = []
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += _none_fields(value, f"{key}.")
        elif value is None:
            out.append(key)
    return out


@pytest.mark.parametrize("overrides", [[], ["policy=las_at", "at_loss=trades"],
                                       ["policy=ppo_strategy"], ["policy=dynamic"],
                                       ["policy=fast_ls_l0", "threat=l0"], ["policy=fgsm_sdi"],
                                       ["policy=fgsm_pgi", "at_loss=pgi"],
                                       ["data=cifar10", "policy=las_at", "at_loss=awp"]])
def test_resolution_leaves_no_preset_open(overrides):
    """Every None (a preset) is filled once, by runners/presets.py (data.root is a location,
    and L0 counts its budget in threat.k, never threat.eps)."""
    resolved = resolve_config(compose_config(overrides))
    allowed = {"data.root", *(["threat.eps"] if resolved.threat.name == "l0" else [])}
    assert set(_none_fields(resolved)) <= allowed, _none_fields(resolved)


def test_label_smoothing_is_one_setting_of_the_policy_and_the_loss():
    sdi = resolve_config(compose_config(["policy=fgsm_sdi"]))
    assert sdi.policy.true_class_prob == sdi.at_loss.true_class_prob == 0.5  # the preset
    mine = resolve_config(compose_config(["policy=fgsm_sdi", "at_loss.true_class_prob=0.9"]))
    assert mine.policy.true_class_prob == mine.at_loss.true_class_prob == 0.9  # the preset yields
    both = resolve_config(compose_config(["policy=fgsm_sdi", "policy.true_class_prob=0.8",
                                          "at_loss.true_class_prob=0.8"]))
    assert both.at_loss.true_class_prob == 0.8
    with pytest.raises(ConfigError, match="at_loss.true_class_prob=0.9 and policy.true_class_prob"
                                          "=0.8 disagree"):
        resolve_config(compose_config(["policy=fgsm_sdi", "policy.true_class_prob=0.8",
                                       "at_loss.true_class_prob=0.9"]))
    plain = resolve_config(compose_config(["policy=pgd_at", "at_loss.true_class_prob=0.9"]))
    assert plain.at_loss.true_class_prob == 0.9
    assert resolve_config(compose_config(["policy=pgd_at"])).at_loss.true_class_prob == 1.0


def test_group_switch_and_field_override():
    cfg = compose_config(["policy=fgsm_rs", "policy.alpha_ratio=1.0", "threat=l2",
                          "at_loss=trades", "at_loss.beta=3", "optim.schedule=cyclic"])
    assert cfg.policy.name == "fgsm_rs" and cfg.policy.alpha_ratio == 1.0
    assert cfg.at_loss.beta == 3.0 and resolve_config(cfg).threat.eps == 1.0
    assert cfg.optim.schedule == "cyclic"


@pytest.mark.parametrize("overrides,needle", [
    (["policy=nope"], "valid: "),
    (["epochz=3"], "valid keys in the top level: "),
    (["policy=pgd_at", "policy.stepz=3"], "valid keys in 'policy': alpha_ratio, name, random_start, steps"),
    (["optim.lrr=1"], "valid keys in 'optim': "),
    (["epochs=abc"], "epochs"),
])
def test_bad_overrides_name_the_problem_and_the_valid_choices(overrides, needle):
    with pytest.raises(ConfigError) as e:
        compose_config(overrides)
    assert needle in str(e.value)
    if overrides == ["policy=nope"]:
        assert "pgd_at" in str(e.value) and "fgsm_rs" in str(e.value)
    if overrides == ["epochz=3"]:
        assert "epochs" in str(e.value) and "batch_size" in str(e.value)


def test_a_recipe_is_a_config_group_option_and_command_line_overrides_win():
    from learned_at.runners.recipes import register_recipe, unregister_recipe

    register_recipe("test_recipe", ["policy=pgd_at", "policy.steps=3", "epochs=7"], "a test")
    try:
        cfg = compose_config(["recipe=test_recipe", "policy.steps=5"])
        assert (cfg.policy.name, cfg.policy.steps, cfg.epochs) == ("pgd_at", 5, 7)
        cfg = compose_config(["epochs=4", "recipe=test_recipe"])  # before it on the line: wins
        assert (cfg.policy.name, cfg.epochs) == ("pgd_at", 4)
        assert compose_config(["recipe=test_recipe", "policy=dynamic"]).policy.name == "dynamic"
        with pytest.raises(ConfigError, match="unknown option 'nope' for 'recipe'; valid: "
                                              ".*test_recipe"):
            compose_config(["recipe=nope"])
    finally:
        unregister_recipe("test_recipe")


def test_a_policy_picks_its_own_at_loss_unless_the_command_line_does():
    assert compose_config(["policy=fgsm_pgi"]).at_loss.name == "pgi"  # prior + regulariser
    assert compose_config(["policy=fgsm_pgi", "at_loss=ce"]).at_loss.name == "ce"
    assert compose_config(["policy=fast_ls_l0", "threat=l0"]).at_loss.name == "trades"
    assert compose_config(["policy=fast_ls_l0", "threat=l0", "at_loss=ce"]).at_loss.name == "ce"
    assert compose_config(["at_loss=ce", "policy=fast_ls_l0", "threat=l0"]).at_loss.name == "ce"


def _numeric(field) -> bool:
    words = re.findall(r"\w+", str(field.type))
    return bool({"int", "float"} & set(words))


def _component_configs():
    from learned_at.agents.base import policy_registry
    from learned_at.envs.geometry.base import geometry_registry
    from learned_at.runners import config
    from learned_at.targets.losses.base import at_loss_registry

    yield from ((f"policy={n}", c) for n, (c, _) in policy_registry().items())
    yield from ((f"at_loss={n}", c) for n, (c, _) in at_loss_registry().items())
    yield from ((f"threat={n}", c) for n, (c, _) in geometry_registry().items())
    yield from ((c.__name__, c) for c in (config.DataConfig, config.OptimConfig,
                                           config.EvalConfig, config.MonitorConfig,
                                           config.TrackingConfig, config.CotrainConfig))


def test_every_numeric_field_has_an_accepted_range():
    """A new component declares ``limits`` for its numeric fields (envs/options.py: Limit);
    a geometry's budget ``eps`` is checked by the geometry (check_budget)."""
    from learned_at.envs.geometry.base import GeometryConfig

    missing = []
    for where, cls in _component_configs():
        limits = getattr(cls, "limits", {})
        for f in dataclasses.fields(cls):
            owned_by_geometry = issubclass(cls, GeometryConfig) and f.name == "eps"
            if _numeric(f) and f.name not in limits and not owned_by_geometry:
                missing.append(f"{where}: {f.name}")
    assert not missing, missing


@pytest.mark.parametrize("overrides,needle", [
    (["threat.eps=-0.1"], "threat.eps=-0.1 is out of range: accepted [0, 1] for threat=linf"),
    (["policy=pgd_at", "policy.steps=-1"], "policy.steps=-1 is out of range: accepted integers"),
    (["policy=las_at", "policy.eps_grid=[0.1,-0.2]"],
     "policy.eps_grid=-0.2 (an element) is out of range: accepted [0, inf)"),
    (["eval.test_subset=0"], "eval.test_subset=0 is out of range: accepted integers in [1, inf)"),
    (["optim.momentum=1"], "optim.momentum=1 is out of range: accepted [0, 1)"),
    (["at_loss.true_class_prob=0"], "at_loss.true_class_prob=0 is out of range: accepted (0, 1]"),
    (["monitor.train_subset=0"], "monitor.train_subset=0"),
    (["checkpoint_every_s=-1"], "checkpoint_every_s=-1"),
    (["tracking.system_metrics_interval_s=0"], "tracking.system_metrics_interval_s=0"),
    (["data.augment=true"], "data.augment=true on digits (8x8) crops with 4 pixels"),
])
def test_values_out_of_range_name_the_field_the_value_and_the_range(overrides, needle):
    with pytest.raises(ConfigError) as e:
        compose_config(overrides)
    assert needle in str(e.value)


def test_legal_but_suspicious_budget_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="learned_at.runners.compose"):
        cfg = compose_config(["threat.eps=0.6"])
    assert cfg.threat.eps == 0.6
    assert "threat.eps=0.6 is at least 0.5" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="learned_at.runners.compose"):
        compose_config(["threat.eps=0.1"])
    assert caplog.text == ""
