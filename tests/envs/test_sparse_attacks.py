"""Sparse evaluation attacks: Sparse-RS is black-box and finds a planted one-pixel flip, sPGD
too; every example stays within k pixels and [0, 1]; sAA is the per-example worst case of its
stages; sPGD's evaluation loss switches to the margin at low confidence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learned_at.envs.attack_loss import AttackLoss, attack_loss
from learned_at.envs.attacks.saa import (SAA_STAGES, check_sparse, predict_labels,
                                         sparse_autoattack, sparse_rs_attack)
from learned_at.envs.attacks.sparse_rs import _new_colours, fraction_of_pixels, sparse_rs
from learned_at.envs.attacks.spgd import spgd_attack
from learned_at.envs.geometry.l0 import L0, changed_pixels

pytestmark = pytest.mark.usefixtures("one_thread")

PIXEL = (2, 3)


class OnePixelFlip(nn.Module):
    """Class 1 iff pixel (2, 3) of a 1x4x4 image is brighter than 0.5, else class 0: a black
    image is flipped by exactly one pixel, and by no change of any other pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, PIXEL[0], PIXEL[1]]
        return torch.stack([torch.zeros_like(v), 10 * (v - 0.5)], 1)


class QueryCounter(nn.Module):
    """Counts the examples it scores and fails if anyone asks for gradients."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.queries = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "a black-box attack must not differentiate"
        self.queries += x.shape[0]
        return self.net(x)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sparse_rs_finds_the_planted_one_pixel_flip_with_logits_only():
    x, y = torch.zeros(6, 1, 4, 4), torch.zeros(6, dtype=torch.long)
    model = QueryCounter(OnePixelFlip())
    adv, used = sparse_rs(model, x, y, 1, queries=200, generator=_gen())
    assert torch.all(OnePixelFlip()(adv).argmax(1) == 1)
    changed = (adv != x).flatten(1)
    assert torch.all(changed.sum(1) == 1)
    assert torch.all(changed[:, PIXEL[0] * 4 + PIXEL[1]])
    assert torch.all(used <= 200) and model.queries <= 6 * 200


class TwoPixelFlip(nn.Module):
    """Class 1 iff pixels (2, 3) and (5, 6) of a 1x8x8 image are both bright: random proposals
    alone almost never place both; the search must keep the proposal that found one (its CE
    rose)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 2, 3] + x[:, 0, 5, 6]
        return torch.stack([torch.zeros_like(v), 10 * (v - 1.5)], 1)


def test_sparse_rs_keeps_proposals_that_raise_the_loss():
    x, y = torch.zeros(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)
    adv, _ = sparse_rs(TwoPixelFlip(), x, y, 2, queries=1500, generator=_gen(8))
    assert torch.all(TwoPixelFlip()(adv).argmax(1) == 1)
    assert torch.all(changed_pixels(adv - x) <= 2)


def test_sparse_rs_respects_per_sample_budgets_and_the_box():
    g = _gen(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 5))
    x, y = torch.rand(7, 3, 4, 4, generator=g), torch.randint(0, 5, (7,), generator=g)
    k = torch.tensor([0.0, 1, 2, 3, 8, 15, 16])
    adv, used = sparse_rs(net, x, y, k, queries=60, generator=g)
    assert torch.all(changed_pixels(adv - x) <= k)
    assert torch.all((adv >= 0) & (adv <= 1)) and torch.all(used <= 60)


def test_new_colours_differ_from_a_corner_and_cover_the_others():
    current = torch.zeros(1, 3, 4000)  # the black corner
    colours = _new_colours(current, _gen(2))
    assert torch.all(colours.sum(1) > 0)  # never black again
    codes = (colours[0] * torch.tensor([[1.0], [2.0], [4.0]])).sum(0)
    counts = torch.bincount(codes.long(), minlength=8)[1:]
    assert counts.min() > 400  # the 7 other corners, each about 1/7


def test_rs_schedule_is_the_reference_one_rescaled():
    assert fraction_of_pixels(0, 10_000, 0.8) == 0.8
    assert fraction_of_pixels(30, 10_000, 0.8) == 0.4
    assert fraction_of_pixels(9000, 10_000, 0.8) == pytest.approx(0.04)
    assert fraction_of_pixels(50, 100, 0.8) == fraction_of_pixels(5000, 10_000, 0.8)


@pytest.mark.parametrize("gradient", ["projected", "unprojected"])
def test_spgd_finds_the_one_pixel_flip_and_keeps_misclassified_inputs(gradient):
    x, y = torch.zeros(5, 1, 4, 4), torch.zeros(5, dtype=torch.long)
    y[0] = 1  # misclassified already: not attacked, returned unchanged
    adv = spgd_attack(OnePixelFlip(), x, y, geometry=L0(), k=1, steps=30, gradient=gradient,
                      generator=_gen(3))
    assert torch.equal(adv[0], x[0])
    assert torch.all(OnePixelFlip()(adv[1:]).argmax(1) == 1)
    assert torch.all(changed_pixels(adv - x) <= 1)


@pytest.mark.parametrize("gradient", ["projected", "unprojected"])
def test_spgd_budget_and_box_with_per_sample_k(tiny_net, batch, gradient):
    x, y = batch
    y = predict_labels(tiny_net, x)  # all correct: all attacked
    k = torch.arange(16).float() % 5
    adv = spgd_attack(tiny_net, x, y, geometry=L0(), k=k, steps=8, gradient=gradient,
                      generator=_gen(4))
    assert torch.all(changed_pixels(adv - x) <= k)
    assert torch.all((adv >= 0) & (adv <= 1))


def test_saa_is_the_worst_case_of_its_stages_and_starts_with_plain_spgd(tiny_net, batch):
    x, y = batch
    y = torch.where(torch.arange(16) < 12, predict_labels(tiny_net, x), y)  # most correct
    res = sparse_autoattack(tiny_net, x, y, 2, geometry=L0(), steps=10, queries=40,
                            generator=_gen(5))
    assert list(res.stages) == list(SAA_STAGES)
    clean = predict_labels(tiny_net, x) == y
    previous = clean
    for stage in SAA_STAGES:  # each stage only removes examples
        assert torch.all(res.stages[stage] <= previous)
        previous = res.stages[stage]
    assert torch.equal(res.robust, res.stages["sparse_rs"])
    assert torch.equal(res.robust, predict_labels(tiny_net, res.x_adv) == y)
    assert torch.all(changed_pixels(res.x_adv - x) <= 2)
    alone = spgd_attack(tiny_net, x, y, geometry=L0(), k=2, steps=10, gradient="projected",
                        generator=_gen(5))
    torch.testing.assert_close(predict_labels(tiny_net, alone) == y, res.stages["spgd_p"])
    rs_alone = sparse_rs_attack(tiny_net, x, y, 2, queries=40, generator=_gen(6))
    assert torch.all(changed_pixels(rs_alone - x) <= 2)


def test_out_of_budget_examples_raise():
    x = torch.zeros(2, 1, 3, 3)
    bad = x.clone()
    bad[0, 0, 0, :2] = 1.0
    with pytest.raises(RuntimeError, match="L0 budget"):
        check_sparse(x, bad, 1, "attack")
    check_sparse(x, bad, 2, "attack")


def test_ce_margin_loss_switches_at_low_confidence():
    logits = torch.tensor([[5.0, 0.0], [0.2, 0.0], [-1.0, 0.0]])
    y = torch.zeros(3, dtype=torch.long)
    loss = attack_loss(AttackLoss.CE_MARGIN, logits, y)
    ce = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(loss, torch.stack([ce[0], torch.tensor(-0.2), torch.tensor(1.0)]))


class Recorder(nn.Module):
    """Records a clone of every batch it is queried on; ``net`` gives the logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.net(x)


class Unfoolable(nn.Module):
    """Logits (5, 0) whatever the input, with a zero (but defined) input gradient: class 0 is
    never lost and no proposal or ascent step ever changes the loss."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        const = torch.tensor([5.0, 0.0]).expand(x.shape[0], 2)
        return const + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_sparse_rs_moves_the_scheduled_number_of_pixels_per_proposal():
    """Each proposal moves e = max(⌊p(t)·k⌋, 1) pixels out and e in (docs/references.md §6.4;
    Sparse-RS): with k = 20 and 200 queries, p(t) = 0.8/2 for t = 1, /4 for t ≤ 4, /5 for
    t ≤ 10, /6 for t ≤ 20, /8 for t ≤ 40 and /10 from there (e = 1 from t = 41), not a
    constant p_init. Nothing is ever accepted here, so each candidate differs from the start
    in exactly 2e pixels."""
    x, y = torch.full((2, 1, 8, 8), 0.5), torch.zeros(2, dtype=torch.long)
    model = Recorder(Unfoolable())
    sparse_rs(model, x, y, 20, queries=200, generator=_gen(9))
    start, *candidates = model.inputs
    assert len(candidates) == 199 and changed_pixels(start - x).tolist() == [20, 20]
    e = [8] + [4] * 3 + [3] * 6 + [2] * 10 + [2] * 20 + [1] * 159
    for it, cand in enumerate(candidates, start=1):
        assert changed_pixels(cand - start).tolist() == [2 * e[it - 1]] * 2, it


class StepFlip(nn.Module):
    """Class 1 iff pixel (2, 3) of a 1x4x4 image is exactly 1; the input gradient is zero, so
    sPGD never moves a magnitude (its random ones are < 1), while Sparse-RS's corner colours
    reach the flip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = (x[:, 0, PIXEL[0], PIXEL[1]] >= 1.0).float()
        z = 10 * (hit - 0.5) + 0.0 * x.flatten(1).sum(1)
        return torch.stack([torch.zeros_like(z), z], 1)


def test_saa_ends_with_sparse_rs_on_what_the_white_box_stages_leave():
    """sAA's third stage is Sparse-RS (docs/references.md §6.4): on a gradient-masked model
    both sPGD stages leave every example robust, and Sparse-RS fools each of them with the
    one-pixel corner change."""
    x, y = torch.zeros(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
    res = sparse_autoattack(StepFlip(), x, y, 1, geometry=L0(), steps=10, queries=300,
                            generator=_gen(10))
    assert res.stages["spgd_p"].all() and res.stages["spgd_u"].all()
    assert not res.stages["sparse_rs"].any() and not res.robust.any()
    expected = x.clone()
    expected[:, 0, PIXEL[0], PIXEL[1]] = 1.0
    assert torch.equal(res.x_adv, expected)


def test_saa_stages_are_projected_then_unprojected_spgd_then_sparse_rs_on_survivors(
        tiny_net, batch, monkeypatch):
    """sAA's cascade (docs/references.md §6.4): sPGD with the projected gradient on the clean
    survivors, then sPGD with the *unprojected* gradient on what it leaves, then Sparse-RS on
    the rest; each stage gets exactly the previous stage's survivors."""
    import learned_at.envs.attacks.saa as saa

    calls: list[tuple[str, int]] = []

    def spgd_spy(model, x, y, **kw):
        calls.append((str(kw["gradient"].value), x.shape[0]))
        return spgd_attack(model, x, y, **kw)

    def rs_spy(model, x, y, k, **kw):
        calls.append(("sparse_rs", x.shape[0]))
        return sparse_rs_attack(model, x, y, k, **kw)

    monkeypatch.setattr(saa, "spgd_attack", spgd_spy)
    monkeypatch.setattr(saa, "sparse_rs_attack", rs_spy)
    x, _ = batch
    y = predict_labels(tiny_net, x)
    res = sparse_autoattack(tiny_net, x, y, 1, geometry=L0(), steps=3, queries=20,
                            generator=_gen(11))
    left = [16] + [int(res.stages[s].sum()) for s in SAA_STAGES[:2]]
    assert left[-1] > 0  # some examples reach the last stage
    assert calls == [("projected", left[0]), ("unprojected", left[1]), ("sparse_rs", left[2])]


def test_eval_spgd_stops_each_sample_at_its_first_misclassified_iterate():
    """The evaluation sPGD returns the first misclassified iterate and evaluates nothing after
    it (``StopOnSuccess``; docs/references.md §6.2: a sample is dropped as soon as it is
    misclassified). One sample per run, so the model's queries are that sample's iterates."""
    x, y = torch.zeros(1, 1, 4, 4), torch.zeros(1, dtype=torch.long)
    for seed in range(3):
        model = Recorder(OnePixelFlip())
        adv = spgd_attack(model, x, y, geometry=L0(), k=1, steps=20, gradient="unprojected",
                          generator=_gen(seed))
        clean_check, *iterates = model.inputs  # the attacked-set check, then x + δ_0, δ_1 ...
        assert torch.equal(clean_check, x)
        fooled = [bool(OnePixelFlip()(z).argmax(1) == 1) for z in iterates]
        first = fooled.index(True, 1)  # the first misclassified iterate after a step
        assert first < 19, fooled  # later steps would still move the example
        assert torch.equal(adv, iterates[first]), (seed, first)
        assert len(iterates) == first + 1, (seed, fooled)  # nothing evaluated after it


def test_eval_spgd_redraws_an_unchanged_mask_after_three_steps():
    """Evaluation patience 3 (docs/references.md §6.2; training uses 10): with a zero gradient
    the mask never moves by itself, so the changed pixels of the iterates x + δ_0 … x + δ_9
    change exactly at steps 3, 6 and 9, when m is re-drawn."""
    x, y = torch.full((2, 1, 8, 8), 0.5), torch.zeros(2, dtype=torch.long)
    model = Recorder(Unfoolable())
    spgd_attack(model, x, y, geometry=L0(), k=2, steps=10, gradient="projected",
                generator=_gen(12))
    iterates = model.inputs[1:]  # after the attacked-set check
    assert len(iterates) == 10
    support = [(z != x).flatten(1) for z in iterates]
    assert all(torch.all(s.sum(1) == 2) for s in support)
    for i in range(2):
        changes = [t for t in range(1, 10) if not torch.equal(support[t][i], support[t - 1][i])]
        assert changes == [3, 6, 9], (i, changes)
