"""AWP: layer-wise relative perturbation size, and the step taken at w + v then v removed."""

import copy

import torch

from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.awp import AwpConfig, weight_perturbation
from learned_at.targets.losses.base import make_at_loss


def test_perturbation_is_gamma_times_each_weight_norm_along_the_loss_gradient(tiny_net, batch):
    x, y = batch
    awp = make_at_loss(AwpConfig(gamma=0.05))
    result = AttackResult.from_tensors(x, y, (x + 0.05).clamp(0, 1))
    v = awp.perturbation(tiny_net, result, TargetInputs())
    params = dict(tiny_net.named_parameters())
    assert set(v) == {k for k, p in params.items() if p.dim() > 1}  # weights, not biases/BN
    for name, pert in v.items():
        torch.testing.assert_close(pert.norm(), 0.05 * params[name].norm())
    # the proxy *ascended* the loss: one plain SGD step on −loss moves each weight along +∇L,
    # so v_l is ∇_l L rescaled (the proxy's forward is in train mode, as the step's)
    ref = copy.deepcopy(tiny_net).train()
    loss = awp.compute(ref, result, TargetInputs()).loss
    grads = dict(zip([k for k, _ in ref.named_parameters()],
                     torch.autograd.grad(loss, list(ref.parameters()))))
    for name, pert in v.items():
        torch.testing.assert_close(pert / pert.norm(), grads[name] / grads[name].norm())
    with torch.no_grad():  # and the loss at w + v is higher than at w
        perturbed = copy.deepcopy(ref)
        for k, p in perturbed.named_parameters():
            if k in v:
                p.add_(v[k])
        assert awp.compute(perturbed, result, TargetInputs()).loss > loss
    zero = weight_perturbation(tiny_net, copy.deepcopy(tiny_net), 0.05)
    assert all(torch.count_nonzero(z) == 0 for z in zero.values())


def test_step_uses_the_gradient_at_the_perturbed_weights_and_removes_v(tiny_net, batch):
    x, y = batch
    x_adv = (x + 0.05).clamp(0, 1)
    awp = make_at_loss(AwpConfig(gamma=0.01))
    model = copy.deepcopy(tiny_net)
    w0 = {k: p.detach().clone() for k, p in model.named_parameters()}
    # expected: w0 − lr · ∇L(w0 + v), with v computed from the same proxy step
    ref = copy.deepcopy(tiny_net)
    ref.train()
    result = AttackResult.from_tensors(x, y, x_adv)
    v = awp.perturbation(ref, result, TargetInputs())
    with torch.no_grad():
        for k, p in ref.named_parameters():
            if k in v:
                p.add_(v[k])
    loss = awp.compute(ref, result, TargetInputs()).loss
    grads = dict(zip([k for k, _ in ref.named_parameters()],
                     torch.autograd.grad(loss, list(ref.parameters()))))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = awp.train_step(model, opt, result)
    torch.testing.assert_close(out.loss, loss.detach())
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), w0[k] - 0.1 * grads[k])
