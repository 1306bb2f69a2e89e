"""The fixed baselines choose exactly the documented parameters."""

import torch

from learned_at.agents.base import make_policy
from learned_at.agents.fixed import FgsmAtConfig, FgsmRsConfig, NoAttackConfig, PgdAtConfig
from tests.helpers import EPS, attack, make_context


def _attack(cfg, net, x, y):
    result, env = attack(make_policy(cfg, make_context()), net, x, y)
    return result, env


def test_fixed_policy_parameters(tiny_net, batch):
    x, y = batch
    r, env = _attack(NoAttackConfig(), tiny_net, x, y)
    assert torch.equal(r.x_adv, x) and env.samples_evaluated == 0
    r, env = _attack(FgsmAtConfig(), tiny_net, x, y)
    assert torch.all(r.steps == 1) and torch.allclose(r.alpha, torch.full_like(r.alpha, EPS))
    assert torch.all(r.delta0 == 0)  # FGSM-AT starts at the clean point
    r, env = _attack(FgsmRsConfig(), tiny_net, x, y)
    assert torch.allclose(r.alpha, torch.full_like(r.alpha, 1.25 * EPS))
    assert torch.all(r.delta0.flatten(1).abs().amax(1) > 0)  # random start
    r, env = _attack(PgdAtConfig(steps=7), tiny_net, x, y)
    assert torch.all(r.steps == 7) and env.samples_evaluated == 7 * len(y)
    assert torch.all(r.passes == 7)
    assert torch.allclose(r.alpha, torch.full_like(r.alpha, EPS / 4))
