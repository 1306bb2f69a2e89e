"""Projection, steps and FOSC of the threat geometries (closed-form checks), and the seam: a toy
geometry registered from this test module runs through the env and the co-training."""

import itertools

import pytest
import torch

from learned_at.envs.geometry import make_geometry
from learned_at.envs.geometry.l2 import fosc_l2, project_l2, random_init_l2
from learned_at.envs.geometry.linf import fosc_linf, project_linf, random_init_linf


def _data(n=6, shape=(2, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g)
    delta = 2 * torch.randn(n, *shape, generator=g)
    eps = torch.linspace(0.05, 0.5, n)
    return x, delta, eps


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_lands_in_ball_and_box_and_is_idempotent(norm):
    x, delta, eps = _data()
    threat = make_geometry(norm)
    p = threat.project(delta, x, eps)
    assert torch.all(threat.size(p) <= eps + 1e-6)  # each sample within its own eps
    assert torch.all(x + p >= 0) and torch.all(x + p <= 1)
    torch.testing.assert_close(threat.project(p, x, eps), p)


def test_linf_projection_is_the_exact_box_projection():
    x = torch.tensor([[[[0.95, 0.1, 0.5]]]])
    delta = torch.tensor([[[[0.3, -0.3, 0.05]]]])
    p = project_linf(delta, x, 0.1)
    torch.testing.assert_close(p, torch.tensor([[[[0.05, -0.1, 0.05]]]]))


def test_l2_projection_rescales_only_outside_the_ball():
    x = torch.full((2, 1, 1, 2), 0.5)
    delta = torch.tensor([[[[0.3, 0.4]]], [[[0.03, 0.04]]]])  # norms 0.5 and 0.05
    p = project_l2(delta, x, 0.1)
    torch.testing.assert_close(p[0], delta[0] * 0.2)
    torch.testing.assert_close(p[1], delta[1])


@pytest.mark.parametrize("init,norm", [(random_init_linf, "linf"), (random_init_l2, "l2")])
def test_random_init_inside_ball(init, norm):
    x, _, eps = _data(n=64)
    eps = eps.repeat(64 // len(eps) + 1)[:64]
    d = init(x, eps, torch.Generator().manual_seed(0))
    assert torch.all(make_geometry(norm).size(d) <= eps + 1e-6)
    assert torch.all(x + d >= 0) and torch.all(x + d <= 1)
    assert d.abs().sum() > 0


def test_fosc_linf_zero_at_gradient_aligned_vertex_positive_elsewhere():
    g = torch.randn(3, 1, 4, 4)
    eps = 0.1
    vertex = eps * g.sign()
    torch.testing.assert_close(fosc_linf(g, vertex, eps), torch.zeros(3), atol=1e-6, rtol=0)
    assert torch.all(fosc_linf(g, torch.zeros_like(g), eps) > 0)
    assert torch.all(fosc_linf(torch.zeros_like(g), vertex, eps) == 0)


def test_fosc_l2_zero_at_gradient_aligned_boundary_point():
    g = torch.randn(3, 1, 4, 4)
    eps = 0.5
    opt = eps * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(fosc_l2(g, opt, eps), torch.zeros(3), atol=1e-5, rtol=0)
    assert torch.all(fosc_l2(g, 0.5 * opt, eps) > 0)


def test_fosc_linf_equals_brute_force_maximum_over_the_ball():
    torch.manual_seed(0)
    g = torch.randn(1, 1, 1, 3)
    xk_minus_x0 = torch.tensor([[[[0.05, -0.1, 0.02]]]])
    eps = 0.1
    vertices = torch.tensor(list(itertools.product([-eps, eps], repeat=3)))  # max at a vertex
    brute = ((vertices - xk_minus_x0.flatten()) @ g.flatten()).max()
    torch.testing.assert_close(fosc_linf(g, xk_minus_x0, eps)[0], brute)


def test_unknown_geometry_lists_valid():
    with pytest.raises(ValueError, match="l2, linf"):
        make_geometry("l3")


def test_fosc_l2_equals_brute_force_maximum_over_the_ball():
    # max over ‖x − x⁰‖₂ ≤ ε of ⟨x − xᵏ, g⟩ is attained on the sphere: sample it densely (2-D)
    g = torch.tensor([[[[0.7, -1.3]]]])
    xk_minus_x0 = torch.tensor([[[[0.1, 0.05]]]])
    eps = 0.3
    angle = torch.linspace(0, 2 * torch.pi, 200_001, dtype=torch.float64)
    sphere = eps * torch.stack([angle.cos(), angle.sin()], 1)
    brute = ((sphere - xk_minus_x0.flatten().double()) @ g.flatten().double()).max()
    torch.testing.assert_close(fosc_l2(g, xk_minus_x0, eps)[0].double(), brute,
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("fosc", [fosc_linf, fosc_l2])
def test_fosc_zero_for_zero_gradient_and_positive_inside_the_ball(fosc):
    g = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(3))
    inside = 0.02 * torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(4))
    assert torch.all(fosc(torch.zeros_like(g), inside, 0.1) == 0)
    assert torch.all(fosc(g, inside, 0.1) > 0)
