"""TRADES: the formula (KL direction, per-sample β, weights), separate BatchNorm passes, and the
Gaussian start that gives the KL attack a gradient at δ = 0."""

import pytest
import torch
import torch.nn.functional as F

from learned_at.agents.fixed import FgsmAt, FgsmAtConfig
from learned_at.envs.attack_env import AttackEnv, EnvConfig
from learned_at.envs.attack_loss import AttackLoss, kl_loss
from learned_at.envs.episode import run_episode
from learned_at.envs.geometry import make_geometry
from learned_at.envs.requirements import EnvRequirements
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import make_at_loss
from learned_at.targets.losses.trades import TRADES_START_NOISE, TradesConfig
from tests.helpers import SHAPE, make_context


@pytest.fixture
def sharp_net(tiny_net):
    """tiny_net with confident outputs (logits ×20), so that KL directions differ clearly."""
    with torch.no_grad():
        tiny_net.body[4].weight.mul_(20.0)
        tiny_net.body[4].bias.mul_(20.0)
    return tiny_net


def _hand_trades(clean, adv, y, beta):
    """CE(clean) + β·Σ_k p_k (log p_k − log q_k), p = softmax(clean), q = softmax(adv)."""
    p = torch.softmax(clean, 1)
    kl = (p * (torch.log(p) - torch.log(torch.softmax(adv, 1)))).sum(1)
    return F.cross_entropy(clean, y, reduction="none") + beta * kl


def test_loss_is_ce_plus_beta_kl_of_clean_against_adversarial(sharp_net, batch):
    tiny_net = sharp_net
    x, y = batch
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    x_adv = (x + 0.5 * noise).clamp(0, 1)  # far enough for KL(p‖q) ≠ KL(q‖p)
    tiny_net.eval()
    loss = make_at_loss(TradesConfig(beta=6.0))
    out = loss.compute(tiny_net, AttackResult.from_tensors(x, y, x_adv), TargetInputs())
    clean, adv = tiny_net(x), tiny_net(x_adv)
    expected = _hand_trades(clean, adv, y, 6.0)
    torch.testing.assert_close(out.per_sample, expected.detach())
    torch.testing.assert_close(out.loss, expected.mean())
    # the KL direction matters: KL(p_adv ‖ p_clean) is a different number here
    forward_kl, reversed_kl = kl_loss(adv, clean), kl_loss(clean, adv)
    torch.testing.assert_close(out.parts["kl"], forward_kl.mean().detach())
    assert (forward_kl - reversed_kl).abs().max() > 0.05
    # the gradient flows through both branches (as the reference's KLDivLoss on both outputs)
    tiny_net.zero_grad()
    out.loss.backward()
    grads = [p.grad.clone() for p in tiny_net.parameters()]
    tiny_net.zero_grad()
    _hand_trades(tiny_net(x), tiny_net(x_adv), y, 6.0).mean().backward()
    for a, b in zip(grads, (p.grad for p in tiny_net.parameters())):
        torch.testing.assert_close(a, b)


def test_per_sample_beta_and_weights(sharp_net, batch):
    tiny_net = sharp_net
    x, y = batch
    x_adv = (x + 0.1).clamp(0, 1)
    tiny_net.eval()
    beta = torch.linspace(1.0, 9.0, len(y))
    weight = torch.linspace(0.0, 2.0, len(y))
    loss = make_at_loss(TradesConfig(beta=6.0))
    result = AttackResult.from_tensors(x, y, x_adv)
    out = loss.compute(tiny_net, result, TargetInputs(beta=beta, weight=weight))
    per = _hand_trades(tiny_net(x), tiny_net(x_adv), y, beta)
    torch.testing.assert_close(out.per_sample, per.detach())
    torch.testing.assert_close(out.loss, (weight * per).mean())


def test_clean_and_adversarial_batches_get_separate_batchnorm_statistics(tiny_net, batch):
    x, y = batch
    x_adv = (x + 0.3).clamp(0, 1)
    tiny_net.train()
    out = make_at_loss(TradesConfig()).compute(tiny_net, AttackResult.from_tensors(x, y, x_adv),
                                               TargetInputs())
    with torch.no_grad():
        separate = _hand_trades(tiny_net(x), tiny_net(x_adv), y, 6.0)
        both = tiny_net(torch.cat([x, x_adv]))
        joint = _hand_trades(both[:16], both[16:], y, 6.0)
    torch.testing.assert_close(out.per_sample, separate)
    assert not torch.allclose(separate, joint, atol=1e-3)  # a joint pass mixes the statistics
    out = make_at_loss(TradesConfig(joint_pass=True)).compute(
        tiny_net, AttackResult.from_tensors(x, y, x_adv), TargetInputs())
    torch.testing.assert_close(out.per_sample, joint)


def _fgsm_trades_episode(model, x, y, requirements, seed=0):
    geometry = make_geometry("linf")
    policy = FgsmAt(FgsmAtConfig(), make_context(attack_loss=AttackLoss.KL, at_loss_name="trades"))
    env = AttackEnv(model, EnvConfig(geometry=geometry, loss=AttackLoss.KL,
                                     requirements=requirements, num_classes=10), SHAPE, len(y))
    return run_episode(env, policy, x, y, generator=torch.Generator().manual_seed(seed))


def test_kl_attack_without_a_start_begins_at_gaussian_noise_and_ascends(sharp_net, batch):
    tiny_net = sharp_net
    x, y = batch
    loss = make_at_loss(TradesConfig())
    assert loss.env_requirements.start_noise == TRADES_START_NOISE == 0.001
    result = _fgsm_trades_episode(tiny_net, x, y, loss.env_requirements)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.001
    torch.testing.assert_close(result.delta0, (x + noise).clamp(0, 1) - x)
    # the FGSM step follows the KL gradient at x + δ₀ (not round-off at δ = 0, max |g| ≈ 2e-7
    # here): it raises the KL far more than the sign of the round-off does
    plain = _fgsm_trades_episode(tiny_net, x, y, EnvRequirements())
    assert torch.count_nonzero(plain.delta0) == 0
    with torch.no_grad():
        clean = tiny_net(x)
        kl_noise = kl_loss(tiny_net(result.x_adv), clean)
        kl_zero = kl_loss(tiny_net(plain.x_adv), clean)
    assert kl_noise.mean() > 1.25 * kl_zero.mean(), (kl_noise.mean(), kl_zero.mean())


def test_requirements_merge_keeps_the_larger_start_noise():
    a, b = EnvRequirements(start_noise=0.001), EnvRequirements()
    assert a.merge(b).start_noise == b.merge(a).start_noise == 0.001
    with pytest.raises(ValueError, match="start_noise"):
        EnvRequirements(start_noise=-1.0)
