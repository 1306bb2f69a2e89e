"""Every registered policy honours the protocol under every threat it accepts (parametrised over
the registry): examples within their per-sample budget (L∞ radius, or L0 changed pixels) and
in [0, 1]; the policies that refuse a threat do so by name."""

import pytest
import torch

from learned_at.agents.base import make_policy, policy_registry
from tests.helpers import EPS, attack, make_context

#: threat -> (nominal budget, most a policy may choose as a multiple of it). N-FGSM (noise 2ε,
#: step ε, no projection to ε) reaches 3ε; L0's N-FGSM noise (fast_ls_l0: noise 2) trains at
#: k + 2k pixels.
THREATS = {"linf": (EPS, 3), "l0": (4.0, 3)}
#: (policy, threat) pairs that must be refused with a message naming the threat.
REFUSED = {("dynamic", "l0"), ("spgd_at", "linf"), ("fast_ls_l0", "linf")}


@pytest.mark.parametrize("threat", sorted(THREATS))
@pytest.mark.parametrize("name", sorted(policy_registry()))
def test_policy_contract(name, threat, tiny_net, batch, one_thread):
    x, y = batch
    nominal, most = THREATS[threat]
    config_cls, _ = policy_registry()[name]
    context = make_context(geometry=threat, eps=nominal)
    if (name, threat) in REFUSED:
        with pytest.raises(ValueError, match=f"threat={threat}"):
            make_policy(config_cls(), context)
        return
    policy = make_policy(config_cls(), context)
    policy.begin_epoch(0)
    result, _ = attack(policy, tiny_net, x, y, index=torch.arange(len(y)))
    adv = result.x_adv.detach()
    size = context.geometry.size(adv - x)
    assert torch.all(size <= result.eps + 1e-6) and torch.all((adv >= 0) & (adv <= 1))
    assert torch.all(result.eps <= most * nominal)
    stats = policy.describe(result)
    assert stats and all(v.shape == (len(y),) for v in stats.values())
    for key, grid in policy.grids().items():
        assert key in stats and len(grid) > 0
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    twin = make_policy(config_cls(), context)
    twin.load_state_dict(state)
    twin.load_extra_state(policy.extra_state())
    for k, v in twin.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_unknown_policy_lists_valid():
    from learned_at.agents.base import PolicyConfig

    with pytest.raises(ValueError, match="pgd_at"):
        make_policy(PolicyConfig(name="nope"), make_context())
