"""The L0 geometry: top-k projection against brute force, sPGD's step against its formulas, the
budget under every mode, patience re-draws, per-sample k, and the config's validation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from learned_at.envs.geometry import make_geometry
from learned_at.envs.geometry.l0 import (L0, L0Config, changed_pixels, project_l0, random_init_l0,
                                         topk_mask)

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _brute_force_projection(delta: torch.Tensor, x: torch.Tensor, k: int) -> float:
    """Smallest ‖δ − z‖² over z with at most k changed pixels and x + z in [0, 1] (one sample)."""
    c, h, w = delta.shape
    clipped = (x + delta).clamp(0, 1) - x
    best = float("inf")
    for size in range(k + 1):
        for keep in itertools.combinations(range(h * w), size):
            mask = torch.zeros(h * w)
            mask[list(keep)] = 1
            z = clipped * mask.view(1, h, w)
            best = min(best, float(((delta - z) ** 2).sum()))
    return best


@pytest.mark.parametrize("k", [0, 1, 2, 3, 6])
def test_projection_equals_brute_force(k):
    g = _gen(k)
    x = torch.rand(5, 2, 2, 3, generator=g)
    delta = 1.5 * torch.randn(5, 2, 2, 3, generator=g)
    p = project_l0(delta, x, k)
    assert torch.all(changed_pixels(p) <= k)
    assert torch.all((x + p >= 0) & (x + p <= 1))
    for i in range(5):
        got = float(((delta[i] - p[i]) ** 2).sum())
        assert got == pytest.approx(_brute_force_projection(delta[i], x[i], k), abs=1e-5)
    torch.testing.assert_close(project_l0(p, x, k), p)  # idempotent


def test_topk_mask_per_sample_k_and_ties_to_lower_index():
    scores = torch.tensor([[0.0, 1.0, 1.0, 0.5], [3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    mask = topk_mask(scores, torch.tensor([1, 3, 2]))
    assert mask.tolist() == [[False, True, False, False], [True, True, True, False],
                             [True, True, False, False]]
    assert topk_mask(scores, torch.tensor([0, 9, 4])).sum(1).tolist() == [0, 4, 4]


def test_random_start_has_k_pixels_in_the_box():
    x = torch.rand(6, 3, 4, 4, generator=_gen())
    k = torch.tensor([0.0, 1, 2, 5, 16, 3])
    d = random_init_l0(x, k, _gen(1))
    assert changed_pixels(d).tolist() == k.tolist()  # random magnitudes hit 0 with prob. 0
    assert torch.all((x + d >= 0) & (x + d <= 1))


def test_start_reproduces_the_projected_start_and_fills_the_dormant_magnitudes():
    geo = L0()
    x = torch.rand(4, 3, 4, 4, generator=_gen())
    k = torch.tensor([1.0, 2, 3, 4])
    delta0 = 2 * torch.randn(4, 3, 4, 4, generator=_gen(2))  # more pixels than the budget
    state = geo.start(x, k, delta0, _gen(3))
    torch.testing.assert_close(geo.perturbation(state), project_l0(delta0, x, k))
    assert state["mask"].flatten(1).sum(1).tolist() == k.tolist()
    off = state["mask"].expand_as(x) == 0
    assert (state["p"][off] != 0).float().mean() > 0.5  # random magnitudes off the mask
    zero = geo.start(x, k, None, _gen(3))
    assert torch.all(geo.perturbation(zero) == 0)
    assert zero["mask"].flatten(1).sum(1).tolist() == k.tolist()


@pytest.mark.parametrize("gradient", ["projected", "unprojected", "random"])
def test_ascent_keeps_budget_and_box_for_every_mode(gradient):
    geo = L0(L0Config(gradient=gradient, patience=2))
    g = _gen(4)
    x = torch.rand(8, 3, 5, 5, generator=g)
    k = torch.tensor([0.0, 1, 2, 3, 5, 8, 13, 25])
    state = geo.start(x, k, geo.random_delta(x, k, g), g)
    for _ in range(12):
        state = geo.ascend(state, torch.randn(x.shape, generator=g), x, k, 0.25, g)
        delta = geo.perturbation(state)
        assert torch.all(changed_pixels(delta) <= k)
        assert torch.all((x + delta >= 0) & (x + delta <= 1))
        assert torch.all(state["p"].abs() <= 1)


def _surrogate_grads(p, m, grad, projected_mask, unprojected: bool):
    """∂/∂p and ∂/∂m of the linear surrogate Σ g ⊙ p ⊙ mask, with mask = σ(m) for the gradient
    of m and (unprojected) of p, and the projected mask for p otherwise (sPGD's custom backward)."""
    p = p.clone().requires_grad_(True)
    m = m.clone().requires_grad_(True)
    sig = torch.sigmoid(m)
    (gm,) = torch.autograd.grad((grad * p.detach() * sig).sum(), m)
    gp = grad * (sig.detach() if unprojected else projected_mask)
    return gp, gm


@pytest.mark.parametrize("gradient", ["projected", "unprojected"])
def test_one_step_follows_the_spgd_formulas(gradient):
    geo = L0(L0Config(gradient=gradient, mask_step=0.25, patience=100))
    g = _gen(5)
    x = torch.rand(3, 2, 4, 4, generator=g)
    k = torch.tensor([2.0, 3, 5])
    state = geo.start(x, k, geo.random_delta(x, k, g), g)
    grad = torch.randn(x.shape, generator=g)
    new = geo.ascend(state, grad, x, k, 0.25, g)
    gp, gm = _surrogate_grads(state["p"], state["m"], grad, state["mask"],
                              gradient == "unprojected")
    expected_p = ((state["p"] + 0.25 * gp.sign()).clamp(-1, 1) + x).clamp(0, 1) - x
    torch.testing.assert_close(new["p"], expected_p)
    step = 0.25 * math.sqrt(16) * gm / gm.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(new["m"], state["m"] + step)
    moved = (new["m"] - state["m"]).flatten(1).norm(dim=1)
    torch.testing.assert_close(moved, torch.full((3,), 0.25 * 4.0))  # β·√(H·W)
    if gradient == "projected":  # only the selected pixels' magnitudes move
        off = state["mask"].expand_as(x) == 0
        torch.testing.assert_close(new["p"][off], state["p"][off])


def test_zero_gradient_makes_no_mask_step_and_patience_redraws_the_mask():
    geo = L0(L0Config(gradient="projected", patience=3))
    g = _gen(6)
    x = torch.rand(4, 1, 6, 6, generator=g)
    k = torch.full((4,), 4.0)
    state = geo.start(x, k, geo.random_delta(x, k, g), g)
    m0 = state["m"].clone()
    for step in range(1, 4):
        state = geo.ascend(state, torch.zeros_like(x), x, k, 0.25, g)
        if step < 3:
            assert torch.equal(state["m"], m0) and state["stall"].tolist() == [step] * 4
    assert state["stall"].tolist() == [0] * 4  # re-drawn after 3 unchanged masks
    assert not torch.equal(state["m"], m0)


def test_random_mode_is_drawn_per_sample():
    x = torch.rand(400, 1, 2, 2, generator=_gen())
    modes = L0(L0Config(gradient="random")).start(x, 1.0, None, _gen(7))["unprojected"]
    assert 0.4 < modes.float().mean() < 0.6
    assert L0(L0Config(gradient="unprojected")).start(x, 1.0, None, _gen())["unprojected"].all()
    assert not L0(L0Config(gradient="projected")).start(x, 1.0, None, _gen())["unprojected"].any()


def test_budget_helpers():
    geo = make_geometry("l0")
    assert geo.budget_unit.value == "pixels" and not geo.has_fosc
    assert geo.fosc(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 1.0) is None
    assert geo.erasing_budget((3, 32, 32)) == 1024
    assert geo.scaled_budget(20, 0.25) == 5 and geo.scaled_budget(10, 0.25) == 2
    assert geo.step_size(20.0, 0.25) == 0.25
    assert torch.equal(geo.step_size(torch.tensor([4.0, 20.0]), 1.0), torch.ones(2))
    assert geo.check_budget(20, (3, 32, 32)) is None
    assert "whole number" in geo.check_budget(2.5, (1, 8, 8))
    assert "[0, 64]" in geo.check_budget(65, (1, 8, 8))
    assert geo.default_budget("cifar10") == 20 and geo.default_budget("digits") == 2
    ks, alphas = geo.strategy_grids(20 / 8, tuple(range(3, 16)), tuple(range(1, 6)))
    assert ks[0] == 8 and ks[-1] == 38 and all(k == int(k) for k in ks)
    assert alphas == (0.125, 0.25, 0.375, 0.5, 0.625)
    assert geo.strategy_grids(0.5, (1, 2, 3), (1,))[0] == (1.0, 2.0)  # ≥ 1 pixel, no repeats


def test_config_validation():
    with pytest.raises(ValueError, match="threat.k"):
        L0Config(eps=0.1)
    with pytest.raises(ValueError, match="whole number"):
        L0Config(k=2.5)
    with pytest.raises(ValueError, match="threat.gradient"):
        L0Config(gradient="sideways")
    assert L0(L0Config(k=7)).nominal_budget() == 7.0
    assert L0().nominal_budget() is None
