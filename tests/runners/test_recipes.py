"""The papers' recipes compose, and their learning rate decays at the references' epochs."""

import pytest

from learned_at.runners.compose import compose_config
from learned_at.runners.presets import resolve_config
from learned_at.runners.schedule import lr_multiplier

#: recipe -> (epochs, decay epochs) of the reference (docs/references.md §1.7, §2.3, §3.3, §4.3,
#: §8).
DECAYS = {
    "las_pgd_at_cifar10": (110, (99, 104)), "las_pgd_at_cifar100": (110, (99, 104)),
    "las_trades_cifar10": (100, (75, 90)), "las_awp_cifar10": (200, (100, 150)),
    "fgsm_sdi_cifar10": (110, (100, 105)), "fgsm_pgi_cifar10": (110, (100, 105)),
    "pgd_at_cifar10": (110, (100, 105)), "dynamic_cifar10": (120, (59, 99)),  # the reference's 0-based ep with ep + 1 == 60
    "dynamic_mnist": (50, (20, 40)),
}


@pytest.mark.parametrize("name", sorted(DECAYS))
def test_recipe_decays_the_lr_at_the_reference_epochs(name):
    cfg = compose_config([f"recipe={name}"])
    epochs, decays = DECAYS[name]
    assert resolve_config(cfg).epochs == epochs
    batches = {"mnist": 468}.get(cfg.data.name, 390)  # 60000 // 128, 50000 // 128
    o = cfg.optim
    f = lr_multiplier(o.schedule, epochs * batches, o.milestones, o.gamma, o.cyclic_peak)
    for k, epoch in enumerate(decays):
        first = epoch * batches  # the first batch of the decay epoch
        assert f(first - 1) == pytest.approx(0.1 ** k) and f(first) == pytest.approx(0.1 ** (k + 1))


def test_recipes_carry_the_reference_settings():
    las = compose_config(["recipe=las_pgd_at_cifar10"])
    assert (las.policy.name, las.at_loss.name, las.target.name) == ("las_at", "ce", "wrn34_10")
    assert compose_config(["recipe=dynamic_cifar10"]).policy.c_max == 0.5
    assert compose_config(["recipe=fgsm_pgi_cifar10"]).at_loss.name == "pgi"
    # later overrides win
    assert compose_config(["recipe=las_trades_cifar10", "epochs=3"]).epochs == 3


def test_a_milestone_decays_at_the_step_it_names_despite_floating_point():
    """0.07 · 300 is 21.000000000000004 in floating point: the decay must still come at step
    21 (the milestone is rounded to a whole step), not one step late."""
    f = lr_multiplier("piecewise", 300, [0.07, 0.5], 0.1, 0.4)
    assert f(20) == 1.0 and f(21) == pytest.approx(0.1)
    assert f(149) == pytest.approx(0.1) and f(150) == pytest.approx(0.01)
