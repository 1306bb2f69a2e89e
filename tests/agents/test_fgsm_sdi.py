"""FGSM-SDI: the generator stays in the ε-ball and its update really ascends the target's loss."""

import copy

import torch
import torch.nn.functional as F

from learned_at.agents.base import StepInfo, make_policy
from learned_at.agents.fgsm_sdi.generator import InitGenerator
from learned_at.agents.fgsm_sdi.policy import FgsmSdiConfig
from learned_at.envs.requirements import Extra
from learned_at.targets.losses.base import soft_cross_entropy
from tests.helpers import EPS, attack, env_for, make_context, target_for


def _policy(**kw):
    torch.manual_seed(0)
    return make_policy(FgsmSdiConfig(**kw), make_context(epochs=1, batches_per_epoch=1))


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
    view = target_for(tiny_net).view()

    def final_loss() -> float:
        result, _ = attack(policy, tiny_net, x, y)
        with torch.no_grad():
            return soft_cross_entropy(tiny_net(result.x_adv), y).mean().item()

    before = final_loss()
    result, _ = attack(policy, tiny_net, x, y)
    for step in range(5):
        metrics = policy.update(result, view, None, StepInfo(step=step, epoch=0))
        assert "policy/generator_loss" in metrics
    after = final_loss()
    assert after > before + 1e-3, (before, after)
    assert all(p.grad is None for p in tiny_net.parameters())  # the target is never touched


def test_update_only_every_k_batches(tiny_net, batch):
    x, y = batch
    policy = _policy(update_every=3, width=8)
    view = target_for(tiny_net).view()
    result, _ = attack(policy, tiny_net, x, y)
    before = [p.detach().clone() for p in policy.generator.parameters()]
    assert policy.update(result, view, None, StepInfo(step=1, epoch=0)) == {}
    assert all(torch.equal(a, b) for a, b in zip(before, policy.generator.parameters()))
    assert policy.update(result, view, None, StepInfo(step=3, epoch=0))
    assert not all(torch.equal(a, b) for a, b in zip(before, policy.generator.parameters()))


def test_target_step_does_not_backprop_into_generator(tmp_path, tracking_uri):
    from learned_at.runners.compose import compose_config
    from learned_at.runners.run import build_run
    from learned_at.runners.train import train_step

    cfg = compose_config(["policy=fgsm_sdi", "policy.update_every=1000", "epochs=1",
                          "batch_size=64", "progress=false", f"checkpoint_dir={tmp_path}"])
    run = build_run(cfg)
    b = next(iter(run.loader))
    before = copy.deepcopy(run.target.model).train()
    seen = {}
    step = run.target.step

    def record(result, inputs):
        seen["result"] = result
        return step(result, inputs)

    run.target.step = record
    stats, _ = train_step(run, b, 0, step=1)  # not an update batch
    assert all(p.grad is None for p in run.policy.generator.parameters())
    # attack success = training samples the pre-step target (train mode, as its step)
    # misclassifies on the attacked batch
    with torch.no_grad():
        wrong = (before(seen["result"].x_adv).argmax(1) != b.y).float().mean()
    torch.testing.assert_close(stats["policy/attack_success"], wrong)


def test_previous_grad_input_uses_stored_signs_without_clean_pass(tiny_net, batch):
    x, y = batch
    policy = _policy(grad_input="previous", width=8, update_every=1000)
    assert policy.requirements().extras == frozenset({Extra.first_grad})
    index = torch.arange(16)
    result, env = attack(policy, tiny_net, x, y, index=index)
    assert result.clean_grad_sign is None and "clean_grad_sign" not in env.extras
    policy.update(result, target_for(tiny_net).view(), None, StepInfo(step=1, epoch=0))
    torch.testing.assert_close(policy.grad_memory.read(index), result.first_grad.sign())


def test_generator_input_is_the_image_and_the_sign_of_the_clean_gradient(tiny_net, batch,
                                                                         one_thread):
    """The generator reads concat(x, sign ∇ₓ CE(f(x), y)) and outputs η = ε·tanh(G(·))
    (docs/references.md §2.2): the env's ``clean_grad_sign`` is that sign (recomputed here on
    the eval-mode target) and the start η equals the generator's layers applied by hand."""
    x, y = batch
    policy = _policy(width=8)
    env = env_for(tiny_net, policy, n=16)
    obs, _ = env.reset(options={"x": x, "y": y})
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(tiny_net(x_req), y, reduction="sum"), x_req)
    assert torch.equal(obs["clean_grad_sign"], grad.sign())
    action = policy.act(obs, 0, None)
    g = policy.generator

    def eta(sign: torch.Tensor) -> torch.Tensor:
        h = g.tail(g.norm(g.block(g.head(torch.cat([x, sign], 1)))))
        return torch.tanh(h) * EPS

    with torch.no_grad():
        expected, blind = eta(grad.sign()), eta(torch.zeros_like(x))
    torch.testing.assert_close(action.init, expected)
    assert (expected - blind).abs().max() > 1e-3  # the gradient channels change η here
