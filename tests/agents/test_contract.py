"""Every registered policy honours the protocol (parametrised over the registry)."""

import pytest
import torch

from agents.base import PolicyContext, make_policy, policy_registry
from envs.attack_env import AttackEnv, EnvConfig
from envs.threat import make_threat
from runners.rollout import run_attack

EPS = 0.2


def _context(n_train=64):
    return PolicyContext(threat=make_threat("linf"), eps=EPS, image_shape=(1, 8, 8),
                         num_classes=10, num_train=n_train, epochs=2, batches_per_epoch=4,
                         device=torch.device("cpu"))


def _env_for(policy, model):
    return AttackEnv(model, EnvConfig(observe_after_step=policy.observe_after_step,
                                      differentiable=policy.differentiable,
                                      extras=policy.extras), (1, 8, 8))


@pytest.mark.parametrize("name", sorted(policy_registry()))
def test_policy_contract(name, tiny_net, batch):
    x, y = batch
    config_cls, _ = policy_registry()[name]
    policy = make_policy(config_cls(), _context())
    policy.begin_epoch(0)
    env = _env_for(policy, tiny_net)
    index = torch.arange(len(y))
    adv = run_attack(env, policy, x, y, index, torch.Generator().manual_seed(0)).detach()
    linf = (adv - x).flatten(1).abs().amax(1)
    assert torch.all(linf <= env.eps + 1e-6) and torch.all((adv >= 0) & (adv <= 1))
    stats = policy.describe(env)
    assert stats and all(v.shape == (len(y),) for v in stats.values())
    for key, grid in policy.grids().items():
        assert key in stats and len(grid) > 0
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    twin = make_policy(config_cls(), _context())
    twin.load_state_dict(state)
    twin.load_extra_state(policy.extra_state())
    for k, v in twin.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_unknown_policy_lists_valid():
    from agents.base import PolicyConfig

    with pytest.raises(ValueError, match="pgd_at"):
        make_policy(PolicyConfig(name="nope"), _context())
