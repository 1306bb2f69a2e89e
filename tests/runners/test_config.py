"""Config composition: groups, overrides, presets and errors that list the valid choices."""

import dataclasses
import logging
import re

import pytest

from learned_at.runners.config import ConfigError, compose_config, resolve


def test_defaults_are_the_embedded_run():
    cfg = compose_config([])
    r = resolve(cfg)
    assert (cfg.data.name, cfg.policy.name, cfg.at_loss.name, cfg.threat.name) == \
        ("digits", "las_at", "ce", "linf")
    assert (r.target, r.eps, r.augment) == ("digits_cnn", 0.2, False)


def test_group_switch_and_field_override():
    cfg = compose_config(["policy=fgsm_rs", "policy.alpha_ratio=1.0", "threat=l2",
                          "at_loss=trades", "at_loss.beta=3", "optim.schedule=cyclic"])
    assert cfg.policy.name == "fgsm_rs" and cfg.policy.alpha_ratio == 1.0
    assert cfg.at_loss.beta == 3.0 and resolve(cfg).eps == 1.0
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


def test_recipe_expands_first_so_later_overrides_win():
    from learned_at.runners.recipes import RECIPES, register_recipe

    register_recipe("test_recipe", ["policy=pgd_at", "policy.steps=3", "epochs=7"], "a test")
    try:
        cfg = compose_config(["recipe=test_recipe", "policy.steps=5"])
        assert (cfg.policy.name, cfg.policy.steps, cfg.epochs) == ("pgd_at", 5, 7)
        with pytest.raises(ConfigError, match="unknown recipe 'nope'; valid: .*test_recipe"):
            compose_config(["recipe=nope"])
    finally:
        RECIPES.pop("test_recipe")


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
])
def test_values_out_of_range_name_the_field_the_value_and_the_range(overrides, needle):
    with pytest.raises(ConfigError) as e:
        compose_config(overrides)
    assert needle in str(e.value)


def test_legal_but_suspicious_budget_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="learned_at.runners.config"):
        cfg = compose_config(["threat.eps=0.6"])
    assert cfg.threat.eps == 0.6
    assert "threat.eps=0.6 is at least 0.5" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="learned_at.runners.config"):
        compose_config(["threat.eps=0.1"])
    assert caplog.text == ""
