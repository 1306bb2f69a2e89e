"""Config composition: groups, overrides, presets and errors that list the valid choices."""

import pytest

from runners.config import ConfigError, compose_config, resolve


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
    from runners.recipes import RECIPES, register_recipe

    register_recipe("test_recipe", ["policy=pgd_at", "policy.steps=3", "epochs=7"], "a test")
    try:
        cfg = compose_config(["recipe=test_recipe", "policy.steps=5"])
        assert (cfg.policy.name, cfg.policy.steps, cfg.epochs) == ("pgd_at", 5, 7)
        with pytest.raises(ConfigError, match="unknown recipe 'nope'; valid: .*test_recipe"):
            compose_config(["recipe=nope"])
    finally:
        RECIPES.pop("test_recipe")
