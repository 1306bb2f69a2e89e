"""FGSM-PGI priors: stored by data-set index, kept across epochs, aligned with flips; momentum."""

import pytest
import torch

from learned_at.agents.base import StepInfo
from learned_at.agents.fgsm_pgi.policy import FgsmPgi, FgsmPgiConfig
from learned_at.envs.episode import run_episode
from learned_at.targets.loader import apply_augmentation
from tests.helpers import EPS, env_for, make_context


def _policy(**kw):
    return FgsmPgi(FgsmPgiConfig(**kw), make_context(epochs=3, batches_per_epoch=1))


def _attack(policy, model, x, y, index, seed=0, offsets=None, flipped=None):
    env = env_for(model, policy, augmented=offsets is not None)
    return run_episode(env, policy, x, y, index, offsets=offsets, flipped=flipped,
                       generator=torch.Generator().manual_seed(seed))


def _attack_and_update(policy, model, x, y, index, epoch, offsets=None, flipped=None):
    result = _attack(policy, model, x, y, index, epoch, offsets, flipped)
    policy.update(result, None, None, StepInfo(step=0, epoch=epoch))
    return result


@pytest.mark.parametrize("prior", ["ep", "mep"])
def test_prior_stored_by_index_and_reused_next_epoch(prior, tiny_net, batch):
    x, y = batch
    policy = _policy(prior=prior)
    index = torch.arange(40, 56)
    policy.begin_epoch(0)
    env0 = _attack_and_update(policy, tiny_net, x, y, index, 0)
    stored = policy.delta_memory.read(index)
    if prior == "ep":  # EP's prior is the epoch's adversarial perturbation
        torch.testing.assert_close(stored, env0.delta)
    assert policy.delta_memory.values[:40].abs().sum() == 0  # other indices untouched
    policy.begin_epoch(1)  # no reset: the prior survives the epoch
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    r1 = _attack(policy, tiny_net, x[perm], y[perm], index[perm])
    torch.testing.assert_close(r1.delta0, stored[perm])  # retrieved by index, not position


def test_reset_every_forgets_priors(tiny_net, batch):
    x, y = batch
    policy = _policy(prior="mep", reset_every=2)
    index = torch.arange(16)
    policy.begin_epoch(0)
    _attack_and_update(policy, tiny_net, x, y, index, 0)
    policy.begin_epoch(1)
    assert policy.seen[:16].all()
    policy.begin_epoch(2)
    assert not policy.seen.any() and policy.momentum_memory.values.abs().sum() == 0


def test_prior_stays_aligned_with_flipped_image(tiny_net, batch):
    x0, y = batch  # un-augmented images
    policy = _policy(prior="ep")
    index = torch.arange(16)
    centre = torch.full((16, 2), 4, dtype=torch.long)  # (pad, pad): no shift
    no_flip = torch.zeros(16, dtype=torch.bool)
    flip = torch.ones(16, dtype=torch.bool)
    policy.begin_epoch(0)
    env0 = _attack_and_update(policy, tiny_net, x0, y, index, 0, centre, no_flip)
    prior_epoch0 = env0.delta.detach()  # in the coordinates of the un-flipped image
    policy.begin_epoch(1)
    x_flipped = apply_augmentation(x0, centre, flip)
    r1 = _attack(policy, tiny_net, x_flipped, y, index, offsets=centre, flipped=flip)
    torch.testing.assert_close(r1.delta0, prior_epoch0.flip(-1))  # flipped with its image
    # and a shifted crop moves the prior with the image
    shift = torch.tensor([[5, 3]] * 16)
    r2 = _attack(policy, tiny_net, apply_augmentation(x0, shift, no_flip), y, index,
                 offsets=shift, flipped=no_flip)
    torch.testing.assert_close(r2.delta0[:, :, :7, 1:], prior_epoch0[:, :, 1:, :7])


def test_mep_momentum_matches_hand_computation(tiny_net, batch):
    x, y = batch
    index = torch.arange(16)
    for form in ("sign", "l1"):
        policy = _policy(prior="mep", momentum=0.3, momentum_form=form)
        policy.begin_epoch(0)
        m0 = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(5))
        policy.momentum_memory.write(index, m0)
        env = _attack_and_update(policy, tiny_net, x, y, index, 0)
        g = env.first_grad
        g_c = g.sign() if form == "sign" else g / g.abs().sum()
        expected_m = 0.3 * m0 + g_c
        torch.testing.assert_close(policy.momentum_memory.read(index), expected_m)
        expected_prior = (env.delta0 + EPS * expected_m.sign()).clamp(-EPS, EPS)
        expected_prior = (x + expected_prior).clamp(0, 1) - x
        torch.testing.assert_close(policy.delta_memory.read(index), expected_prior)
        # the training example itself took the plain gradient sign from the prior
        expected_adv = ((env.delta0 + EPS * g.sign()).clamp(-EPS, EPS) + x).clamp(0, 1) - x
        torch.testing.assert_close(env.delta, expected_adv)


def test_bp_uses_previous_batch_perturbation(tiny_net, batch):
    x, y = batch
    policy = _policy(prior="bp")
    policy.begin_epoch(0)
    env0 = _attack_and_update(policy, tiny_net, x, y, torch.arange(16), 0)
    x2 = torch.rand_like(x)
    r1 = _attack(policy, tiny_net, x2, y, torch.arange(16, 32))
    expected = ((x2 + env0.delta).clamp(0, 1) - x2)
    torch.testing.assert_close(r1.delta0, expected)


def test_bad_options_name_the_fix():
    with pytest.raises(ValueError, match="policy.prior.*bp, ep, mep"):
        _policy(prior="xx")
    with pytest.raises(ValueError, match="momentum_form"):
        _policy(momentum_form="l2")
