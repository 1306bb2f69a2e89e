"""Every built-in AT loss honours a policy's per-sample weights (Dynamic AT's re-weighting)."""

import pytest
import torch

from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import at_loss_registry, make_at_loss


@pytest.mark.parametrize("name", sorted(set(at_loss_registry()) - {"fast_bat"}))
def test_weighted_loss_is_the_mean_of_weight_times_per_sample_loss(tiny_net, batch, name):
    x, y = batch
    x_adv, x_init = (x + 0.1).clamp(0, 1), (x - 0.05).clamp(0, 1)
    tiny_net.eval()
    loss = make_at_loss(at_loss_registry()[name][0]())
    result = AttackResult.from_tensors(x, y, x_adv, x_init=x_init)
    weight = torch.linspace(0.0, 3.0, len(y))
    plain = loss.compute(tiny_net, result, TargetInputs())
    weighted = loss.compute(tiny_net, result, TargetInputs(weight=weight))
    torch.testing.assert_close(weighted.per_sample, plain.per_sample)
    torch.testing.assert_close(weighted.loss, (weight * plain.per_sample).mean())
    assert not torch.allclose(weighted.loss, plain.loss)


def test_every_loss_but_fast_bat_is_in_the_table_above():
    """Fast-BAT's step needs an episode (tests/targets/test_fast_bat.py checks its weights);
    a new loss lands in the table above by registering."""
    assert "tradeoff" in at_loss_registry() and "fast_bat" in at_loss_registry()
