"""Fast-BAT: the implicit term against finite differences, H, the sign pitfall, δ* feasibility,
the two gradient paths, and which settings the loss refuses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learned_at.envs.geometry import make_geometry
from learned_at.envs.geometry.linf import inactive_mask_linf
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import make_at_loss
from learned_at.targets.losses.fast_bat import (FastBat, FastBatConfig, attack_gradient,
                                                reference_step)

LINF = make_geometry("linf")
SHAPE = (2, 3, 3)  # 18 inputs: small enough for a full finite-difference gradient
STEP = 0.3  # γ at which about half of the coordinates of _problem() clip


class TwoLayer(nn.Module):
    """Linear-tanh-linear on (N, 2, 3, 3) inputs; smooth, so central differences are accurate."""

    def __init__(self, hidden: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(18, hidden), nn.Tanh(),
                                  nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _problem(seed: int = 0, n: int = 4, eps: float = 0.1):
    """A float64 batch with pixels at 0 and 1, a start z inside the ball, and a model whose
    gradients are large enough that some coordinates clip."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TwoLayer().double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    x = torch.rand(n, *SHAPE, generator=g, dtype=torch.float64)
    x[:, 0, 0, :] = 0.0  # box bound x + δ = 0 reachable for negative steps
    x[:, 1, 2, :] = 1.0  # box bound x + δ = 1 reachable for positive steps
    y = torch.randint(0, 3, (n,), generator=g)
    z = LINF.project((2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1) * eps * 0.5,
                     x, eps)
    return model, x, y, z, torch.full((n,), eps, dtype=torch.float64)


def _result(x, y, z, eps, **fields):
    """A record whose final perturbation is z (used with z_from=episode: z held fixed)."""
    return AttackResult.from_tensors(x, y, x + z, geometry=LINF, eps=eps, **fields)


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def _set_flat(model, flat):
    i = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[i:i + p.numel()].view_as(p))
            i += p.numel()


def _lower_level_delta_star(model, x, y, z, eps, step):
    """δ*(θ) = Π(z + γ ∇δ CE_sum(θ, z)), written independently of the loss."""
    return LINF.project(z + step * attack_gradient(model, x, y, z), x, eps)


def _central_difference(fn, model, h=1e-6):
    """∇θ fn(model) by central differences over every parameter. fn returns a float."""
    theta0 = _flat([p.detach().clone() for p in model.parameters()])
    out = torch.zeros_like(theta0)
    for i in range(theta0.numel()):
        for sign in (1.0, -1.0):
            t = theta0.clone()
            t[i] += sign * h
            _set_flat(model, t)
            out[i] += sign * fn(model)
    _set_flat(model, theta0)
    return out / (2 * h)


def test_inactive_mask_marks_exactly_the_coordinates_at_a_bound():
    eps = torch.tensor([0.1, 0.2])
    x = torch.tensor([0.5, 0.05, 0.95, 0.0, 1.0, 0.5, 0.5]).repeat(2, 1).view(2, 1, 1, 7)
    # coordinates: at +ε | at −x (x + δ = 0) | at 1 − x | x = 0 and δ = 0 | x = 1 and δ = 0 |
    #              interior | within 1e-8 of −ε
    delta = torch.stack([
        torch.tensor([0.1, -0.05, 0.05, 0.0, 0.0, 0.03, -0.1 + 1e-8]),
        torch.tensor([0.2, -0.05, 0.05, 0.0, 0.0, -0.19, -0.2 + 1e-8]),
    ]).view(2, 1, 1, 7)
    expected = torch.tensor([0, 0, 0, 0, 0, 1, 0.]).repeat(2, 1).view(2, 1, 1, 7)
    mask = inactive_mask_linf(delta, x, eps)
    assert torch.equal(mask, expected)
    assert torch.equal(LINF.inactive_mask(delta, x, eps), expected)
    assert not make_geometry("l2").has_inactive_mask and LINF.has_inactive_mask


def test_h_of_the_loss_is_the_set_of_unclipped_coordinates(one_thread):
    model, x, y, z, eps = _problem()
    loss = FastBat(FastBatConfig(z_from="episode", step=STEP))
    lower = loss.lower_level(model, _result(x, y, z, eps))
    u = z + STEP * attack_gradient(model, x, y, z)
    e = eps.view(-1, 1, 1, 1)
    low, high = torch.maximum(-x, -e), torch.minimum(1 - x, e)
    unclipped = ((u > low) & (u < high)).double()
    assert torch.equal(lower.h, unclipped)
    assert 0.2 < lower.h.mean() < 0.8  # both kinds of coordinates are present


@pytest.mark.parametrize("lam", [None, 10.0])
def test_implicit_term_equals_finite_difference_of_the_lower_level(lam, one_thread):
    """(dδ*/dθ)ᵀ ∇δ ℓ_tr by central differences of θ ↦ ℓ_tr(θ₀, δ*(θ)), z held fixed.

    With λ = 1/γ (lam=None) the implicit term is exactly that derivative; with λ decoupled from
    γ (the reference's λ = 10) it is 1/(λγ) times it.
    """
    step = STEP
    model, x, y, z, eps = _problem()
    u = z + step * attack_gradient(model, x, y, z)
    e = eps.view(-1, 1, 1, 1)
    margin = torch.minimum((u - torch.maximum(-x, -e)).abs(), (u - torch.minimum(1 - x, e)).abs())
    assert margin.min() > 1e-4  # no coordinate sits on a kink: H is the same at θ₀ ± h
    loss = FastBat(FastBatConfig(z_from="episode", step=step, lam=lam))
    grads = loss.gradients(model, _result(x, y, z, eps))
    implicit = _flat(grads.implicit)
    assert 0.2 < grads.lower.h.mean() < 0.8

    theta0 = [p.detach().clone() for p in model.parameters()]
    frozen = TwoLayer().double()
    _set_flat(frozen, _flat(theta0))

    def upper_at_moved_delta_star(m):
        delta_star = _lower_level_delta_star(m, x, y, z, eps, step)
        return F.cross_entropy(frozen(x + delta_star), y).item()

    fd = _central_difference(upper_at_moved_delta_star, model)
    scale = 1.0 if lam is None else 1.0 / (lam * step)
    assert fd.abs().max() > 1e-3  # the derivative is not trivially zero
    torch.testing.assert_close(implicit, scale * fd, rtol=1e-5, atol=1e-8)
    assert float(grads.output.parts["implicit_norm"]) == pytest.approx(
        float(implicit.norm()), rel=1e-6)


def test_implicit_term_at_delta_star_is_the_mixed_derivative_there(one_thread):
    """ig_point=delta_star: (1/λ)∇θ⟨∇δ CE_sum(θ, δ*), H ⊙ v⟩ with δ*, H, v held fixed."""
    model, x, y, z, eps = _problem(seed=1)
    loss = FastBat(FastBatConfig(z_from="episode", step=STEP, lam=4.0, ig_point="delta_star"))
    grads = loss.gradients(model, _result(x, y, z, eps))
    d_star, h = grads.lower.delta_star, grads.lower.h
    d = d_star.clone().requires_grad_(True)
    (v,) = torch.autograd.grad(F.cross_entropy(model(x + d), y), d)

    def inner(m):
        return (attack_gradient(m, x, y, d_star) * h * v).sum().item() / 4.0

    torch.testing.assert_close(_flat(grads.implicit), _central_difference(inner, model),
                               rtol=1e-5, atol=1e-8)


def test_sign_linearisation_warns_and_its_implicit_term_is_zero(one_thread):
    model, x, y, z, eps = _problem()
    with pytest.warns(UserWarning, match="collapses into FGSM-AT"):
        loss = FastBat(FastBatConfig(z_from="episode", step=STEP, linearisation="sign"))
    grads = loss.gradients(model, _result(x, y, z, eps))
    assert all(torch.count_nonzero(g) == 0 for g in grads.implicit)
    assert float(grads.output.parts["implicit_norm"]) == 0.0
    raw = FastBat(FastBatConfig(z_from="episode", step=STEP)).gradients(model,
                                                                       _result(x, y, z, eps))
    assert float(raw.output.parts["implicit_norm"]) > 0.0


@pytest.mark.parametrize("step", [None, 0.05, 50.0])
def test_delta_star_lies_in_the_ball_and_the_box(step, one_thread):
    torch.manual_seed(3)
    model = TwoLayer()
    n = 16
    x = torch.rand(n, *SHAPE)
    x[:4] = x[:4].round()  # pixels at 0 and 1
    y = torch.randint(0, 3, (n,))
    eps = torch.tensor([8 / 255, 16 / 255, 0.3, 0.0]).repeat(4)
    delta0 = LINF.random_delta(x, eps)
    first = attack_gradient(model, x, y, delta0)
    result = AttackResult.from_tensors(x, y, x + delta0, x_init=x + delta0, geometry=LINF,
                                       eps=eps, first_grad=first)
    lower = FastBat(FastBatConfig(step=step)).lower_level(model, result)
    for d in (lower.z, lower.delta_star):
        assert torch.all(d.abs().flatten(1).amax(1) <= eps + 1e-7)
        assert torch.all((x + d >= -1e-7) & (x + d <= 1 + 1e-7))
    assert torch.equal(lower.h[eps == 0], torch.zeros_like(lower.h[eps == 0]))


def test_reference_step_rule():
    eps = torch.tensor([4 / 255, 8 / 255, 9 / 255, 16 / 255])
    torch.testing.assert_close(reference_step(eps),
                               torch.tensor([5000, 5000, 2000, 2000]) / 255.0)


def test_train_step_applies_upper_plus_implicit_and_matches_the_surrogate(one_thread):
    model, x, y, z, eps = _problem(seed=2)
    loss = FastBat(FastBatConfig(z_from="episode", step=STEP, lam=0.5))
    result = _result(x, y, z, eps)
    grads = loss.gradients(model, result)
    total = [a + b for a, b in zip(grads.upper, grads.implicit)]
    assert float(_flat(grads.implicit).norm()) > 1e-3 * float(_flat(grads.upper).norm())

    model.zero_grad()
    loss.compute(model, result, TargetInputs()).loss.backward()
    torch.testing.assert_close(_flat([p.grad for p in model.parameters()]), _flat(total))

    before = _flat([p.detach().clone() for p in model.parameters()])
    loss.train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), result)
    after = _flat([p.detach() for p in model.parameters()])
    torch.testing.assert_close(before - after, _flat(total))


def test_raw_step_start_is_one_raw_step_from_the_episode_start(one_thread):
    model, x, y, z0, eps = _problem(seed=4)
    first = attack_gradient(model, x, y, z0)
    result = AttackResult.from_tensors(x, y, x + z0, x_init=x + z0, geometry=LINF, eps=eps,
                                       first_grad=first)
    lower = FastBat(FastBatConfig(step=0.5)).lower_level(model, result)
    torch.testing.assert_close(lower.z, LINF.project(z0 + 0.5 * first, x, eps))
    g = attack_gradient(model, x, y, lower.z)
    torch.testing.assert_close(lower.delta_star, LINF.project(lower.z + 0.5 * g, x, eps))
    with pytest.raises(ValueError, match="first_grad"):
        FastBat(FastBatConfig()).lower_level(model, _result(x, y, z0, eps))


def test_implicit_off_gives_zero_term_and_bad_fields_name_themselves(one_thread):
    model, x, y, z, eps = _problem()
    off = FastBat(FastBatConfig(z_from="episode", step=STEP, implicit=False))
    assert float(off.gradients(model, _result(x, y, z, eps)).output.parts["implicit_norm"]) == 0
    for field, value in (("lam", 0.0), ("step", -1.0), ("mask_tol", -1.0),
                         ("ig_point", "theta"), ("z_from", "nowhere")):
        with pytest.raises(ValueError, match=f"at_loss.{field}"):
            make_at_loss(FastBatConfig(**{field: value}))


def test_refused_settings_name_the_fix():
    from learned_at.agents.fixed import FgsmRsConfig, NoAttackConfig, PgdAtConfig
    from learned_at.agents.las_at.policy import LasAtConfig

    loss = make_at_loss(FastBatConfig(z_from="raw_step"))
    assert "policy=fgsm_rs" in loss.check_setting(PgdAtConfig(), LINF)
    assert "z_from=auto" in loss.check_setting(LasAtConfig(), LINF)
    assert "no attack step" in loss.check_setting(NoAttackConfig(), LINF)
    assert "no attack step" in loss.check_setting(PgdAtConfig(steps=0), LINF)
    assert loss.check_setting(PgdAtConfig(steps=1), LINF) is None
    assert loss.check_setting(FgsmRsConfig(), LINF) is None
    for z_from in ("auto", "episode"):
        other = make_at_loss(FastBatConfig(z_from=z_from))
        for policy in (PgdAtConfig(), LasAtConfig(), NoAttackConfig()):
            assert other.check_setting(policy, LINF) is None
        assert "threat=linf" in other.check_setting(FgsmRsConfig(), make_geometry("l2"))
    assert make_at_loss(FastBatConfig(z_from="episode")).env_requirements.extras == frozenset()


def test_auto_start_per_sample_from_the_steps_the_episode_took(one_thread):
    model, x, y, z0, eps = _problem(seed=5)
    first = attack_gradient(model, x, y, z0)
    example = LINF.project(z0 + 0.05 * first.sign(), x, eps)
    steps = torch.tensor([0, 1, 2, 1])
    result = AttackResult.from_tensors(x, y, x + example, x_init=x + z0, geometry=LINF, eps=eps,
                                       first_grad=first, steps=steps)
    raw = LINF.project(z0 + 0.5 * first, x, eps)
    z = FastBat(FastBatConfig(step=0.5)).lower_level(model, result).z
    torch.testing.assert_close(z[steps == 1], raw[steps == 1])
    torch.testing.assert_close(z[steps != 1], example[steps != 1])
    z_raw = FastBat(FastBatConfig(step=0.5, z_from="raw_step")).lower_level(model, result).z
    torch.testing.assert_close(z_raw, raw)


def test_lower_level_batchnorm_mode(tiny_net, batch, one_thread):
    """lower_bn=eval leaves the running statistics to the upper level's one training forward;
    lower_bn=train (the reference) updates them at z too."""
    x, y = batch
    z = LINF.random_delta(x, 0.2, torch.Generator().manual_seed(0))
    result = AttackResult.from_tensors(x, y, x + z, geometry=LINF, eps=torch.full((16,), 0.2))
    bn = tiny_net.body[1]
    for mode, passes in (("eval", 1), ("train", 2)):
        tiny_net.train()
        before = int(bn.num_batches_tracked)
        FastBat(FastBatConfig(z_from="episode", lower_bn=mode)).gradients(tiny_net, result)
        assert int(bn.num_batches_tracked) - before == passes and tiny_net.training
