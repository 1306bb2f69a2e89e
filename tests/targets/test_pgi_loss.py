"""The PGI regulariser: value, reduction, gradient routing, label-smoothing preset."""

import pytest
import torch
import torch.nn.functional as F

from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import make_at_loss, soft_cross_entropy
from learned_at.targets.losses.ce import CrossEntropyConfig
from learned_at.targets.losses.pgi import PgiLossConfig


def _result(x, y, x_adv, x_init=None):
    return AttackResult.from_tensors(x, y, x_adv, x_init=x_init)


def test_pgi_loss_matches_hand_computation(tiny_net, batch):
    x, y = batch
    x_adv = (x + 0.1).clamp(0, 1)
    x_init = (x - 0.05).clamp(0, 1)
    tiny_net.eval()
    for reduction, scale in (("mean", 1 / 10), ("sum", 1.0)):
        loss = make_at_loss(PgiLossConfig(lam=10.0, reduction=reduction, true_class_prob=0.6))
        out = loss.compute(tiny_net, _result(x, y, x_adv, x_init), TargetInputs())
        z, z0 = tiny_net(x_adv), tiny_net(x_init)
        expected = soft_cross_entropy(z, y, 0.6).mean() + 10.0 * scale * (
            (z - z0) ** 2).sum(1).mean()
        torch.testing.assert_close(out.loss, expected)
    ref_mean = F.mse_loss(z, z0)  # the reference code's mean over N×K
    out = make_at_loss(PgiLossConfig()).compute(tiny_net, _result(x, y, x_adv, x_init),
                                                TargetInputs())
    torch.testing.assert_close(out.parts["pgi_reg"], ref_mean)


def test_prior_branch_gradient_is_optional(tiny_net, batch):
    x, y = batch
    x_init = (x - 0.05).clamp(0, 1)
    tiny_net.eval()
    grads = {}
    for prior_grad in (True, False):
        loss = make_at_loss(PgiLossConfig(prior_grad=prior_grad))
        tiny_net.zero_grad()
        out = loss.compute(tiny_net, _result(x, y, (x + 0.1).clamp(0, 1), x_init),
                           TargetInputs())
        out.loss.backward()
        grads[prior_grad] = [p.grad.clone() for p in tiny_net.parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(grads[True], grads[False]))


def test_bad_reduction_names_the_field():
    with pytest.raises(ValueError, match="at_loss.reduction"):
        make_at_loss(PgiLossConfig(reduction="max"))


def test_label_smoothing_is_the_loss_configs(tiny_net, batch):
    x, y = batch
    tiny_net.eval()
    plain = make_at_loss(CrossEntropyConfig()).compute(tiny_net, _result(x, y, x),
                                                       TargetInputs()).loss
    smoothed = make_at_loss(CrossEntropyConfig(true_class_prob=0.5)).compute(
        tiny_net, _result(x, y, x), TargetInputs()).loss
    torch.testing.assert_close(smoothed, soft_cross_entropy(tiny_net(x), y, 0.5).mean())
    assert not torch.allclose(plain, smoothed)
