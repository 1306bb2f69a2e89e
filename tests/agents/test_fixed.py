"""The fixed baselines choose exactly the documented parameters."""

import torch

from agents.fixed import FgsmAtConfig, FgsmRsConfig, NoAttackConfig, PgdAtConfig
from agents.base import make_policy
from tests.agents.test_contract import EPS, _context, _env_for
from runners.rollout import run_attack


def _attack(cfg, net, x, y):
    policy = make_policy(cfg, _context())
    env = _env_for(policy, net)
    adv = run_attack(env, policy, x, y, None, torch.Generator().manual_seed(0))
    return env, adv


def test_fixed_policy_parameters(tiny_net, batch):
    x, y = batch
    env, adv = _attack(NoAttackConfig(), tiny_net, x, y)
    assert torch.equal(adv, x) and env.samples_evaluated == 0
    env, adv = _attack(FgsmAtConfig(), tiny_net, x, y)
    assert torch.all(env.steps == 1) and torch.allclose(env.alpha, torch.full_like(env.alpha, EPS))
    env, _ = _attack(FgsmRsConfig(), tiny_net, x, y)
    assert torch.allclose(env.alpha, torch.full_like(env.alpha, 1.25 * EPS))
    assert torch.all(env.delta0.flatten(1).abs().amax(1) > 0)  # random start
    env, _ = _attack(PgdAtConfig(steps=7), tiny_net, x, y)
    assert torch.all(env.steps == 7) and env.samples_evaluated == 7 * len(y)
    assert torch.allclose(env.alpha, torch.full_like(env.alpha, EPS / 4))
