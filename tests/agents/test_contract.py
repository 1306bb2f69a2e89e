"""Every registered policy honours the protocol (parametrised over the registry)."""

import pytest
import torch

from agents.base import make_policy, policy_registry
from tests.helpers import EPS, attack, make_context


@pytest.mark.parametrize("name", sorted(policy_registry()))
def test_policy_contract(name, tiny_net, batch):
    x, y = batch
    config_cls, _ = policy_registry()[name]
    policy = make_policy(config_cls(), make_context())
    policy.begin_epoch(0)
    result, _ = attack(policy, tiny_net, x, y, index=torch.arange(len(y)))
    adv = result.x_adv.detach()
    linf = (adv - x).flatten(1).abs().amax(1)
    assert torch.all(linf <= result.eps + 1e-6) and torch.all((adv >= 0) & (adv <= 1))
    assert torch.all(result.eps <= 2 * EPS)
    stats = policy.describe(result)
    assert stats and all(v.shape == (len(y),) for v in stats.values())
    for key, grid in policy.grids().items():
        assert key in stats and len(grid) > 0
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    twin = make_policy(config_cls(), make_context())
    twin.load_state_dict(state)
    twin.load_extra_state(policy.extra_state())
    for k, v in twin.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_unknown_policy_lists_valid():
    from agents.base import PolicyConfig

    with pytest.raises(ValueError, match="pgd_at"):
        make_policy(PolicyConfig(name="nope"), make_context())
