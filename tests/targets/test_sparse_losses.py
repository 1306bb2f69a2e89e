"""sAT / sTRADES / trade-off losses and Self-Adaptive Training soft labels: formulas on hand-made
numbers, geometry defaults (β = 3 and a CE attack under L0), the warm-up, commits only on the
target's own step, and weights_only-loadable state."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from learned_at.envs.attack_loss import AttackLoss, kl_loss
from learned_at.envs.geometry import make_geometry
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import LossContext, make_at_loss
from learned_at.targets.losses.ce import CrossEntropyConfig
from learned_at.targets.losses.soft_labels import SoftLabelConfig, SoftLabels
from learned_at.targets.losses.tradeoff import TradeoffConfig
from learned_at.targets.losses.trades import TradesConfig
from tests.helpers import target_for

pytestmark = pytest.mark.usefixtures("one_thread")


def _result(batch, index=None, seed=0):
    x, y = batch
    g = torch.Generator().manual_seed(seed)
    x_adv = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return AttackResult.from_tensors(x, y, x_adv, index=index)


def _context(num_train=40, epochs=10, batches=2, geometry=None):
    return LossContext(num_train=num_train, num_classes=10, epochs=epochs,
                       batches_per_epoch=batches, geometry=geometry)


def test_trades_takes_the_geometry_defaults_unless_set():
    l0, linf = make_geometry("l0"), make_geometry("linf")
    s = make_at_loss(TradesConfig(), _context(geometry=l0))
    assert s.beta == 3.0 and s.attack_loss is AttackLoss.CE  # sTRADES
    t = make_at_loss(TradesConfig(), _context(geometry=linf))
    assert t.beta == 6.0 and t.attack_loss is AttackLoss.KL  # TRADES
    own = make_at_loss(TradesConfig(beta=5.0, attack="kl"), _context(geometry=l0))
    assert own.beta == 5.0 and own.attack_loss is AttackLoss.KL


def test_strades_formula(tiny_net, batch):
    r = _result(batch)
    out = make_at_loss(TradesConfig(), _context(geometry=make_geometry("l0"))).compute(
        tiny_net, r, TargetInputs())
    clean, adv = tiny_net(r.x), tiny_net(r.x_adv)
    expected = F.cross_entropy(clean, r.y) + 3.0 * kl_loss(adv, clean).mean()
    torch.testing.assert_close(out.loss, expected)


def test_tradeoff_formula(tiny_net, batch):
    r = _result(batch)
    out = make_at_loss(TradeoffConfig(a=0.3)).compute(tiny_net, r, TargetInputs())
    expected = (0.7 * F.cross_entropy(tiny_net(r.x), r.y)
                + 0.3 * F.cross_entropy(tiny_net(r.x_adv), r.y))
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(ValueError, match="at_loss.a"):
        TradeoffConfig(a=1.5)


def test_soft_label_update_weights_and_commit():
    sl = SoftLabels(SoftLabelConfig(enabled=True, momentum=0.9, warmup_epochs=0), 5, 3, 10, 1,
                    torch.device("cpu"))
    index, y = torch.tensor([1, 3]), torch.tensor([0, 2])
    logits = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    p = logits.softmax(1)
    t, w = sl.targets(index, y, logits)
    onehot = F.one_hot(y, 3).float()
    torch.testing.assert_close(t, 0.9 * onehot + 0.1 * p)
    raw = t.amax(1)
    torch.testing.assert_close(w, raw * 2 / raw.sum())
    assert sl.memory.abs().sum() == 0  # not stored until the target's step ends
    sl.end_step()
    torch.testing.assert_close(sl.memory[index], t)
    t2, _ = sl.targets(index, y, logits)  # the second update starts from the stored target
    torch.testing.assert_close(t2, 0.9 * t + 0.1 * p)


def test_soft_labels_wait_for_the_warmup(tiny_net, batch):
    r = _result(batch, index=torch.arange(16))
    cfg = CrossEntropyConfig(soft_labels=SoftLabelConfig(enabled=True, warmup_epochs=1))
    loss = make_at_loss(cfg, _context(num_train=16, batches=2))
    plain = make_at_loss(CrossEntropyConfig())
    for _ in range(2):  # epoch 0: the plain CE, nothing stored
        torch.testing.assert_close(loss.compute(tiny_net, r, TargetInputs()).loss,
                                   plain.compute(tiny_net, r, TargetInputs()).loss)
        loss.end_step()
    assert not loss.soft_labels.seen.any()
    out = loss.compute(tiny_net, r, TargetInputs())  # epoch 1: soft targets from the clean logits
    with torch.no_grad():
        p = tiny_net(r.x).softmax(1)
    t = 0.9 * F.one_hot(r.y, 10).float() + 0.1 * p
    w = t.amax(1) * 16 / t.amax(1).sum()
    per = -(t * F.log_softmax(tiny_net(r.x_adv), 1)).sum(1) * w
    torch.testing.assert_close(out.loss, per.mean())


@pytest.mark.parametrize("config", [CrossEntropyConfig, TradesConfig, TradeoffConfig])
def test_soft_labels_combine_with_each_sparse_loss(config, tiny_net, batch):
    on = SoftLabelConfig(enabled=True, warmup_epochs=0, source="adversarial")
    loss = make_at_loss(config(soft_labels=on), _context(num_train=16))
    out = loss.compute(tiny_net, _result(batch, index=torch.arange(16)), TargetInputs())
    assert torch.isfinite(out.loss) and loss.soft_labels._pending is not None


def test_look_ahead_never_moves_the_soft_labels(tiny_net, batch):
    cfg = CrossEntropyConfig(soft_labels=SoftLabelConfig(enabled=True, warmup_epochs=0))
    loss = make_at_loss(cfg, _context(num_train=16))
    target = target_for(tiny_net, loss)
    r = _result(batch, index=torch.arange(16))
    target.lookahead(r)
    assert not loss.soft_labels.seen.any() and loss.soft_labels.steps == 0
    target.step(r, TargetInputs(lookahead=True))
    assert loss.soft_labels.seen.all() and loss.soft_labels.steps == 1


def test_soft_label_state_round_trips_weights_only(tiny_net, batch):
    cfg = TradesConfig(soft_labels=SoftLabelConfig(enabled=True, warmup_epochs=0))
    loss = make_at_loss(cfg, _context(num_train=16))
    loss.compute(tiny_net, _result(batch, index=torch.arange(16)), TargetInputs())
    loss.end_step()
    buf = io.BytesIO()
    torch.save(loss.state_dict(), buf)
    buf.seek(0)
    twin = make_at_loss(cfg, _context(num_train=16))
    twin.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(twin.soft_labels.memory, loss.soft_labels.memory)
    assert twin.soft_labels.steps == 1


def test_soft_labels_are_refused_where_unsupported_and_need_the_run():
    from learned_at.targets.losses.pgi import PgiLossConfig

    on = SoftLabelConfig(enabled=True)
    with pytest.raises(ValueError, match="does not take soft labels"):
        make_at_loss(PgiLossConfig(soft_labels=on), _context())
    with pytest.raises(ValueError, match="training-set size"):
        make_at_loss(CrossEntropyConfig(soft_labels=on))
    from learned_at.runners.validation import config_problems

    assert config_problems(SoftLabelConfig(momentum=1.0), "at_loss.soft_labels") == [
        "at_loss.soft_labels.momentum=1 is out of range: accepted [0, 1)"]  # checked once


def _sat_by_hand(clean_logits: torch.Tensor, y: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """SAT's first update from one-hot labels and the *clean* prediction (m = 0.9): the targets
    t = 0.9·onehot(y) + 0.1·softmax(f(x)) and the weights max_j t_j normalised to mean 1."""
    t = 0.9 * F.one_hot(y, 10).float() + 0.1 * clean_logits.softmax(1)
    w = t.amax(1)
    return t, w / w.mean()


def _soft_ce(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -(t * F.log_softmax(logits, 1)).sum(1)


def test_strades_with_soft_labels_uses_the_sat_targets_and_weights_in_its_clean_term(
        tiny_net, batch):
    """Fast-LS-ℓ0's loss (sTRADES + SAT, docs/references.md §6.5, §6.7.12): ℓ_i =
    w_i·CE(f(x_i), t_i) + 3·KL(f(x_i) ‖ f(x_adv,i)), with the SAT targets and weights from
    the clean prediction (the default source); the KL term keeps no labels."""
    r = _result(batch, index=torch.arange(16))
    cfg = TradesConfig(soft_labels=SoftLabelConfig(enabled=True, warmup_epochs=0))
    loss = make_at_loss(cfg, _context(num_train=16, geometry=make_geometry("l0")))
    out = loss.compute(tiny_net, r, TargetInputs())
    with torch.no_grad():
        clean, adv = tiny_net(r.x), tiny_net(r.x_adv)
    t, w = _sat_by_hand(clean, r.y)
    kl = 3.0 * kl_loss(adv, clean)
    torch.testing.assert_close(out.per_sample, w * _soft_ce(clean, t) + kl)
    torch.testing.assert_close(out.loss, (w * _soft_ce(clean, t) + kl).mean())
    # what the test tells apart: hard labels, no weights, targets from the adversarial logits
    t_adv, w_adv = _sat_by_hand(adv, r.y)
    for wrong in (F.cross_entropy(clean, r.y, reduction="none"), _soft_ce(clean, t),
                  w_adv * _soft_ce(clean, t_adv)):
        assert (wrong - w * _soft_ce(clean, t)).abs().max() > 1e-4


def test_tradeoff_with_soft_labels_uses_the_sat_targets_in_both_terms(tiny_net, batch):
    """The trade-off loss with SAT (docs/references.md §6.7.13): ℓ_i = (1 − a)·w_i·CE(f(x_i),
    t_i) + a·w_i·CE(f(x_adv,i), t_i), the clean *and* the adversarial term on the soft
    targets and weights (from the clean prediction)."""
    r = _result(batch, index=torch.arange(16))
    cfg = TradeoffConfig(a=0.3, soft_labels=SoftLabelConfig(enabled=True, warmup_epochs=0))
    out = make_at_loss(cfg, _context(num_train=16)).compute(tiny_net, r, TargetInputs())
    with torch.no_grad():
        clean, adv = tiny_net(r.x), tiny_net(r.x_adv)
    t, w = _sat_by_hand(clean, r.y)
    expected = 0.7 * w * _soft_ce(clean, t) + 0.3 * w * _soft_ce(adv, t)
    torch.testing.assert_close(out.per_sample, expected)
    torch.testing.assert_close(out.loss, expected.mean())
    hard_adv = 0.7 * w * _soft_ce(clean, t) + 0.3 * F.cross_entropy(adv, r.y, reduction="none")
    assert (hard_adv - expected).abs().max() > 1e-4
