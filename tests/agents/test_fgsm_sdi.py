"""FGSM-SDI: the generator stays in the ε-ball and its update really ascends the target's loss."""

import torch

from agents.base import PolicyContext, UpdateBatch
from agents.fgsm_sdi import FgsmSdi, FgsmSdiConfig
from agents.sdi_generator import InitGenerator
from envs.attack_env import AttackEnv, EnvConfig
from envs.threat import make_threat
from runners.rollout import run_attack
from targets.at_loss import soft_cross_entropy

EPS = 0.2


def _policy(**kw):
    ctx = PolicyContext(threat=make_threat("linf"), eps=EPS, image_shape=(1, 8, 8),
                        num_classes=10, num_train=64, epochs=1, batches_per_epoch=1,
                        device=torch.device("cpu"))
    torch.manual_seed(0)
    return FgsmSdi(FgsmSdiConfig(**kw), ctx)


def _env(model):
    return AttackEnv(model, EnvConfig(differentiable=FgsmSdi.differentiable,
                                      extras=FgsmSdi.extras), (1, 8, 8))


def test_generator_output_inside_eps_ball_for_any_input():
    torch.manual_seed(0)
    gen = InitGenerator(3, width=16)
    for train in (True, False):
        gen.train(train)
        x = torch.randn(8, 3, 16, 16) * 100.0  # far outside the image box, huge activations
        g = torch.randint(-1, 2, x.shape).float()
        eps = torch.rand(8) * 0.1
        eta = gen(x, g, eps)
        assert eta.shape == x.shape
        assert torch.all(eta.abs() <= eps.view(-1, 1, 1, 1) + 1e-7)
        assert gen(x, g, 8 / 255).abs().max() <= 8 / 255 + 1e-7


def test_generator_update_increases_target_loss(tiny_net, batch):
    x, y = batch
    policy = _policy(update_every=1, lr=0.01, true_class_prob=1.0, width=16)
    env = _env(tiny_net)

    def final_loss() -> float:
        adv = run_attack(env, policy, x, y).detach()
        with torch.no_grad():
            return soft_cross_entropy(tiny_net(adv), y).mean().item()

    before = final_loss()
    for step in range(5):
        metrics = policy.update(UpdateBatch(x=x, y=y, index=torch.arange(len(y)), x_adv=x,
                                            env=env, model=tiny_net, target_step=None,
                                            batch_idx=step, epoch=0))
        assert "policy/generator_loss" in metrics
    after = final_loss()
    assert after > before + 1e-3, (before, after)
    assert all(p.grad is None for p in tiny_net.parameters())  # the target is never touched


def test_update_only_every_k_batches(tiny_net, batch):
    x, y = batch
    policy = _policy(update_every=3, width=8)
    env = _env(tiny_net)
    run_attack(env, policy, x, y)
    before = [p.detach().clone() for p in policy.generator.parameters()]
    ub = dict(x=x, y=y, index=torch.arange(len(y)), x_adv=x, env=env, model=tiny_net,
              target_step=None, epoch=0)
    assert policy.update(UpdateBatch(batch_idx=1, **ub)) == {}
    assert all(torch.equal(a, b) for a, b in zip(before, policy.generator.parameters()))
    assert policy.update(UpdateBatch(batch_idx=3, **ub))
    assert not all(torch.equal(a, b) for a, b in zip(before, policy.generator.parameters()))


def test_target_step_does_not_backprop_into_generator(tmp_path, tracking_uri):
    from runners.config import compose_config
    from runners.cotrain import Cotrainer

    cfg = compose_config(["policy=fgsm_sdi", "policy.update_every=1000", "epochs=1",
                          "batch_size=64", "progress=false", f"checkpoint_dir={tmp_path}"])
    trainer = Cotrainer(cfg, [], tracking_uri)
    b = next(iter(trainer.train_loader))
    trainer.global_step = 1  # not an update batch
    stats, _ = trainer.train_batch(b, 0)
    assert all(p.grad is None for p in trainer.policy.generator.parameters())
    assert 0.0 <= float(stats["policy/attack_success"]) <= 1.0


def test_previous_grad_input_uses_stored_signs_without_clean_pass(tiny_net, batch):
    x, y = batch
    policy = _policy(grad_input="previous", width=8, update_every=1000)
    assert policy.extras == frozenset({"first_grad"})
    env = AttackEnv(tiny_net, EnvConfig(differentiable=True, extras=policy.extras), (1, 8, 8))
    index = torch.arange(16)
    run_attack(env, policy, x, y, index)
    assert "clean_grad_sign" not in env.extras
    policy.update(UpdateBatch(x=x, y=y, index=index, x_adv=x, env=env, model=tiny_net,
                              target_step=None, batch_idx=1, epoch=0))
    torch.testing.assert_close(policy.grad_memory.read(index), env.extras["first_grad"].sign())
