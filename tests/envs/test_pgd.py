"""Evaluation PGD, FGSM and the CW margin against hand computations; restarts keep each
example's worst case; the reference's early-stop / max-loss PGD."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learned_at.envs.attack_env import AttackEnv, EnvConfig
from learned_at.envs.attack_loss import AttackLoss, margin_loss
from learned_at.envs.episode import run_episode
from learned_at.envs.geometry import make_geometry
from learned_at.envs.pgd import FixedAttack, fgsm_attack, pgd_attack, pgd_attack_max_loss
from learned_at.envs.requirements import EnvRequirements
from tests.helpers import SHAPE

LINF = make_geometry("linf")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def correct_batch(tiny_net):
    """64 inputs labelled with tiny_net's own predictions: all correct before an attack."""
    x = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, tiny_net(x).argmax(1)


def test_fgsm_is_one_signed_gradient_step_from_the_clean_point(tiny_net, batch):
    x, y = batch
    tiny_net.train()  # the attack must run the target in eval mode and restore the mode
    x_req = x.clone().requires_grad_(True)
    tiny_net.eval()
    (g,) = torch.autograd.grad(F.cross_entropy(tiny_net(x_req), y, reduction="sum"), x_req)
    tiny_net.train()
    expected = (x + 0.1 * g.sign()).clamp(0, 1)
    torch.testing.assert_close(fgsm_attack(tiny_net, x, y, geometry=LINF, eps=0.1), expected)
    assert tiny_net.training


def test_margin_loss_by_hand():
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    y = torch.tensor([0, 2])
    # best wrong logit minus the true one: 5 − 2 = 3; max(0, −1) − 3 = −3
    torch.testing.assert_close(margin_loss(logits, y), torch.tensor([3.0, -3.0]))


def test_cw_step_follows_the_margin_gradient_of_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(12, *SHAPE, generator=torch.Generator().manual_seed(3)) * 0.6 + 0.2
    y = torch.randint(0, 10, (12,), generator=torch.Generator().manual_seed(4))
    x_adv = pgd_attack(model, x, y, geometry=LINF, eps=0.05, alpha=0.05, steps=1,
                       loss=AttackLoss.MARGIN, random_start=False)
    w = model[1].weight  # (10, 64): ∇ₓ margin = w[j*] − w[y], j* the best wrong class at x
    with torch.no_grad():
        logits = model(x).masked_fill(F.one_hot(y, 10).bool(), float("-inf"))
    direction = (w[logits.argmax(1)] - w[y]).view(-1, *SHAPE)
    torch.testing.assert_close(x_adv, (x + 0.05 * direction.sign()).clamp(0, 1))
    with torch.no_grad():
        assert torch.all(margin_loss(model(x_adv), y) > margin_loss(model(x), y))


def test_restarts_keep_each_examples_first_success(tiny_net, correct_batch):
    x, y = correct_batch
    kw = dict(geometry=LINF, eps=0.005, alpha=0.00125, steps=3)
    one = pgd_attack(tiny_net, x, y, restarts=1, generator=torch.Generator().manual_seed(7), **kw)
    many = pgd_attack(tiny_net, x, y, restarts=4, generator=torch.Generator().manual_seed(7),
                      **kw)
    with torch.no_grad():
        fooled_one = tiny_net(one).argmax(1) != y
        fooled_many = tiny_net(many).argmax(1) != y
    assert 0 < fooled_one.sum() < len(y)
    # the first restart is shared; what it fooled is kept as it was, and stays fooled
    assert torch.equal(many[fooled_one], one[fooled_one])
    assert torch.all(fooled_many[fooled_one])
    # later restarts break more examples (the per-example worst case over restarts)
    assert fooled_many.sum() > fooled_one.sum()
    assert torch.all((many - x).abs() <= 0.005 + 1e-6)


def _early_stop_episode(model, x, y, generator):
    env = AttackEnv(model, EnvConfig(geometry=LINF, requirements=EnvRequirements(
        observe_after_step=True, observe_final=True)), SHAPE, len(y), max_budget=6)
    actor = FixedAttack(LINF, torch.full((len(y),), 0.04), torch.full((len(y),), 0.01), 6,
                        early_stop=True)
    return run_episode(env, actor, x, y, generator=generator)


def test_early_stop_freezes_each_sample_at_its_first_misclassified_iterate(tiny_net,
                                                                        correct_batch):
    x, y = correct_batch
    result = _early_stop_episode(tiny_net, x, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        final_wrong = tiny_net(result.x_adv).argmax(1) != y
    stopped = result.steps < 6
    assert stopped.any() and (~stopped).any()
    assert torch.all(final_wrong[stopped])  # stopped because misclassified, and left there
    assert torch.equal(result.correct, ~final_wrong)
    torch.testing.assert_close(result.loss, F.cross_entropy(tiny_net(result.x_adv), y,
                                                            reduction="none").detach())


def test_max_loss_restarts_keep_the_highest_final_loss(tiny_net, correct_batch):
    x, y = correct_batch
    kw = dict(geometry=LINF, eps=0.04, alpha=0.01, steps=6)
    g = torch.Generator().manual_seed(5)
    runs = [pgd_attack_max_loss(tiny_net, x, y, restarts=1, generator=g, **kw)
            for _ in range(3)]
    best = pgd_attack_max_loss(tiny_net, x, y, restarts=3,
                               generator=torch.Generator().manual_seed(5), **kw)
    with torch.no_grad():
        losses = torch.stack([F.cross_entropy(tiny_net(r), y, reduction="none") for r in runs])
    pick = losses.argmax(0)
    assert len(set(pick.tolist())) > 1  # the restarts win on different samples
    expected = torch.stack(runs)[pick, torch.arange(len(y))]
    torch.testing.assert_close(best, expected)


def test_train_mode_attack_updates_running_statistics_and_restores_the_mode(tiny_net, batch):
    x, y = batch
    before = tiny_net.body[1].running_mean.clone()
    pgd_attack_max_loss(tiny_net, x, y, geometry=LINF, eps=0.1, alpha=0.03, steps=2,
                        train_bn=True, generator=torch.Generator().manual_seed(0))
    assert not tiny_net.training
    assert not torch.equal(tiny_net.body[1].running_mean, before)
    before = tiny_net.body[1].running_mean.clone()
    pgd_attack_max_loss(tiny_net, x, y, geometry=LINF, eps=0.1, alpha=0.03, steps=2,
                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(tiny_net.body[1].running_mean, before)
