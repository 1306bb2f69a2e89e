"""N-FGSM: noise of k·ε, one sign step of α = ε, no projection back onto the ε-ball."""

from __future__ import annotations

import torch

from learned_at.agents.base import make_policy
from learned_at.agents.n_fgsm import NFgsmConfig
from tests.helpers import attack, make_context

EPS = 0.05  # x + δ stays inside [0, 1] for x in [0.25, 0.75], |δ| <= 3ε


def test_the_example_is_noise_plus_one_full_sign_step_outside_the_eps_ball(tiny_net, batch):
    x, y = batch
    x = 0.25 + 0.5 * x  # inside [0.25, 0.75]: the box never clips at these budgets
    policy = make_policy(NFgsmConfig(), make_context(eps=EPS))
    result, env = attack(policy, tiny_net, x, y, seed=3)
    assert env.samples_evaluated == len(y)  # one forward/backward per sample, like FGSM-RS
    noise = result.x_init - x
    assert noise.abs().amax() <= 2 * EPS + 1e-6 and noise.abs().amax() > EPS  # U(-2ε, 2ε)
    step = result.x_adv - result.x_init
    moved = step.abs() > 0  # sign(0) = 0 where the gradient vanishes
    assert moved.float().mean() > 0.5
    torch.testing.assert_close(step.abs()[moved], torch.full_like(step[moved], EPS))  # α = ε
    linf = (result.x_adv - x).flatten(1).abs().amax(1)
    assert torch.all(linf <= 3 * EPS + 1e-6) and linf.max() > 2 * EPS  # not clipped to ε
    assert torch.allclose(result.eps, torch.full_like(result.eps, 3 * EPS))


def test_noise_and_step_are_settings(tiny_net, batch):
    x, y = batch
    x = 0.25 + 0.5 * x
    policy = make_policy(NFgsmConfig(noise=0.0, alpha_ratio=0.5), make_context(eps=EPS))
    result, _ = attack(policy, tiny_net, x, y)
    delta = (result.x_adv - x).abs()
    assert delta.amax() > 0
    torch.testing.assert_close(delta[delta > 0], torch.full_like(delta[delta > 0], EPS / 2))
