"""The batched attack env: per-sample parameters, compaction, modes and the gymnasium contract."""

import pytest
import torch
import torch.nn.functional as F

from learned_at.envs.attack_env import AttackAction, AttackEnv, EnvConfig
from learned_at.envs.attack_loss import AttackLoss, attack_loss
from learned_at.envs.geometry import make_geometry
from learned_at.envs.requirements import BnMode, EnvRequirements, Extra


def _env(model, n=16, norm="linf", loss=AttackLoss.CE, bn_mode=BnMode.eval, **req):
    return AttackEnv(model, EnvConfig(geometry=make_geometry(norm), loss=loss, bn_mode=bn_mode,
                                      requirements=EnvRequirements(**req), num_classes=10),
                     (1, 8, 8), n)


def _run(env, x, y, eps, alpha, budget, init=None, stop_after=None):
    obs, _ = env.reset(options={"x": x, "y": y})
    obs, *_ , info = env.step(AttackAction(eps=eps, alpha=alpha, budget=budget, init=init))
    t = 1
    while info["num_active"]:
        stop = None if stop_after is None else (env.steps >= stop_after)
        obs, *_, info = env.step(AttackAction(stop=stop))
        t += 1
    return env.adversarial_batch()


def _masked_reference(model, x, y, eps, alpha, budget, init, norm="linf"):
    """Full-batch PGD where sample i only moves while step < budget_i (no compaction)."""
    threat = make_geometry(norm)
    delta = threat.project(init, x, eps)
    for s in range(int(budget.max())):
        d = delta.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x + d), y, reduction="none").sum()
        (g,) = torch.autograd.grad(loss, d)
        moved = threat.project(threat.step(delta, g, alpha), x, eps)
        delta = torch.where((s < budget).view(-1, 1, 1, 1), moved, delta)
    return x + delta


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_compaction_equals_masked_full_batch(tiny_net, batch, norm):
    x, y = batch
    n = len(y)
    eps = torch.linspace(0.05, 0.3, n) * (1 if norm == "linf" else 4)
    alpha = eps / 4
    budget = torch.arange(n) % 6  # 0..5 iterations, including samples that never move
    init = make_geometry(norm).random_delta(x, eps, torch.Generator().manual_seed(0))
    env = _env(tiny_net, norm=norm)
    got = _run(env, x, y, eps, alpha, budget, init)
    want = _masked_reference(tiny_net, x, y, eps, alpha, budget, init, norm)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert env.samples_evaluated == int(budget.sum())  # the saved work: sum of budgets, not N*max
    assert torch.equal(env.steps, budget)


def test_per_sample_parameters_are_honoured(tiny_net, batch):
    x, y = batch
    n = len(y)
    eps = torch.linspace(0.01, 0.2, n)
    budget = torch.full((n,), 5)
    budget[0] = 0
    adv = _run(_env(tiny_net), x, y, eps, eps / 2, budget)
    linf = (adv - x).flatten(1).abs().amax(1)
    assert torch.equal(adv[0], x[0])  # budget 0: unchanged
    assert torch.all(linf <= eps + 1e-6)
    assert torch.all(linf[1:] > 0)
    assert torch.all((adv >= 0) & (adv <= 1))


def test_pgd_raises_the_loss_over_clean(tiny_net, batch):
    x, y = batch
    n = len(y)
    eps = torch.full((n,), 0.1)
    adv = _run(_env(tiny_net), x, y, eps, eps / 4, torch.full((n,), 10))
    with torch.no_grad():
        clean = F.cross_entropy(tiny_net(x), y, reduction="none")
        robust = F.cross_entropy(tiny_net(adv), y, reduction="none")
    assert torch.all(robust >= clean - 1e-6) and robust.mean() > clean.mean() + 0.05


def test_stopped_sample_gets_no_further_steps_and_equals_one_step_attack(tiny_net, batch):
    x, y = batch
    n = len(y)
    eps = torch.full((n,), 0.1)
    env = _env(tiny_net, observe_after_step=True)
    adv = _run(env, x, y, eps, eps / 4, torch.full((n,), 5), stop_after=1)
    one = _run(_env(tiny_net), x, y, eps, eps / 4, torch.ones(n, dtype=torch.long))
    torch.testing.assert_close(adv, one)
    r = env.result()
    assert torch.all(r.steps == 1)
    assert torch.all(r.fosc >= 0)  # evaluated at the new iterate (natural reference point)


def test_bn_statistics_untouched_in_eval_mode_and_updated_in_train_mode(tiny_net, batch):
    x, y = batch
    n = len(y)
    bn = tiny_net.body[1]
    before = bn.num_batches_tracked.clone()
    tiny_net.train()
    _run(_env(tiny_net, bn_mode=BnMode.eval), x, y, torch.full((n,), 0.1), torch.full((n,), 0.05),
         torch.full((n,), 3))
    assert bn.num_batches_tracked == before and tiny_net.training  # mode restored
    _run(_env(tiny_net, bn_mode=BnMode.train), x, y, torch.full((n,), 0.1), torch.full((n,), 0.05),
         torch.full((n,), 3))
    assert bn.num_batches_tracked == before + 3


def test_attack_never_accumulates_parameter_gradients(tiny_net, batch):
    x, y = batch
    n = len(y)
    _run(_env(tiny_net), x, y, torch.full((n,), 0.1), torch.full((n,), 0.05), torch.full((n,), 3))
    assert all(p.grad is None for p in tiny_net.parameters())


def test_differentiable_mode_carries_gradient_to_the_init(tiny_net, batch):
    x, y = batch
    n = len(y)
    eps = torch.full((n,), 0.1)
    init = (0.05 * torch.randn_like(x)).requires_grad_(True)
    adv = _run(_env(tiny_net, differentiable=True), x, y, eps, eps / 4,
               torch.ones(n, dtype=torch.long), init=init)
    loss = F.cross_entropy(tiny_net(adv), y)
    (g,) = torch.autograd.grad(loss, init)
    assert g.abs().sum() > 0
    nondiff = _run(_env(tiny_net), x, y, eps, eps / 4, torch.ones(n, dtype=torch.long),
                   init=init.detach())
    assert not nondiff.requires_grad
    torch.testing.assert_close(adv.detach(), nondiff)


def test_kl_objective_and_clean_gradient_extra(tiny_net, batch):
    x, y = batch
    env = _env(tiny_net, loss=AttackLoss.KL, extras=frozenset({Extra.clean_grad_sign}))
    obs, _ = env.reset(options={"x": x, "y": y})
    d = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(tiny_net(d), y, reduction="sum"), d)
    assert torch.equal(obs["clean_grad_sign"], g.sign())
    n = len(y)
    obs, reward, *_ = env.step(AttackAction(eps=torch.full((n,), 0.1), alpha=torch.full((n,), 0.02),
                                            budget=torch.full((n,), 2)))
    torch.testing.assert_close(reward, torch.zeros(n), atol=1e-6, rtol=0)  # KL at δ=0 is 0


def test_first_action_must_configure(tiny_net, batch):
    x, y = batch
    env = _env(tiny_net)
    env.reset(options={"x": x, "y": y})
    with pytest.raises(ValueError, match="eps"):
        env.step(AttackAction())
    with pytest.raises(ValueError, match="source"):
        _env(tiny_net).reset(options={})


def test_margin_loss_matches_definition():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 1.0, 0.0]])
    y = torch.tensor([1, 0])
    torch.testing.assert_close(attack_loss(AttackLoss.MARGIN, logits, y), torch.tensor([-1.0, -4.0]))


def test_observe_final_evaluates_the_last_iterate_of_exhausted_samples(tiny_net, batch):
    x, y = batch
    n = len(y)
    eps = torch.full((n,), 0.1)
    budget = torch.full((n,), 3)
    plain = _env(tiny_net, observe_after_step=True)
    _run(plain, x, y, eps, eps / 4, budget)
    final = _env(tiny_net, observe_after_step=True, observe_final=True)
    adv = _run(final, x, y, eps, eps / 4, budget)
    assert torch.all(plain.passes == 3) and torch.all(final.passes == 4)
    torch.testing.assert_close(adv, plain.adversarial_batch())  # same attack, one more pass
    d = (adv - x).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(tiny_net(x + d), y, reduction="sum"), d)
    torch.testing.assert_close(final.fosc, make_geometry("linf").fosc(g, adv - x, eps))
    assert not torch.allclose(plain.fosc, final.fosc)


def test_augmentation_and_first_grad_reach_the_observation(tiny_net, batch):
    x, y = batch
    env = AttackEnv(tiny_net, EnvConfig(requirements=EnvRequirements(
        extras=frozenset({Extra.first_grad})), augmented=True), (1, 8, 8), 16)
    offsets = torch.zeros(16, 2, dtype=torch.long)
    flipped = torch.ones(16, dtype=torch.bool)
    obs, _ = env.reset(options={"x": x, "y": y, "offsets": offsets, "flipped": flipped})
    assert obs["offsets"] is offsets and obs["flipped"] is flipped
    init = torch.full_like(x, 0.05)
    budget = torch.tensor([1] * 8 + [0] * 8)
    obs, *_ = env.step(AttackAction(eps=torch.full((16,), 0.1), alpha=torch.full((16,), 0.1),
                                    budget=budget, init=init))
    d = (init[:8] + (x[:8] + init[:8]).clamp(0, 1) - x[:8] - init[:8]).requires_grad_(True)
    loss = F.cross_entropy(tiny_net(x[:8] + d), y[:8], reduction="sum")
    (g,) = torch.autograd.grad(loss, d)
    torch.testing.assert_close(obs["first_grad"][:8], g)
    assert obs["first_grad"][8:].abs().sum() == 0
    plain, _ = _env(tiny_net).reset(options={"x": x, "y": y})
    assert "offsets" not in plain and "first_grad" not in plain
