"""Curriculum AT: the iteration count follows the documented linear schedule."""

import torch

from learned_at.agents.base import make_policy
from learned_at.agents.curriculum import CurriculumConfig, curriculum_steps
from tests.helpers import make_context


def _context(epochs):
    return make_context(epochs=epochs)


def test_schedule_grows_linearly_then_stays():
    assert [curriculum_steps(t, 1, 10, 9.0) for t in (0, 1, 3, 9, 20)] == [1, 2, 4, 10, 10]
    policy = make_policy(CurriculumConfig(), _context(epochs=120))  # T' = 100
    ks = []
    for t in range(120):
        policy.begin_epoch(t)
        ks.append(policy.steps)
    assert ks[0] == 1 and ks[50] == round(1 + 9 * 0.5) and ks[100:] == [10] * 20
    assert all(a <= b for a, b in zip(ks, ks[1:]))


def test_act_sets_the_epoch_budget_for_every_sample(batch):
    x, _ = batch
    policy = make_policy(CurriculumConfig(k_min=2, k_max=6), _context(epochs=4))
    policy.begin_epoch(2)  # T' = 10/3: K = round(2 + 4 * 0.6) = 4
    action = policy.act({"x": x}, 0, torch.Generator().manual_seed(0))
    assert torch.all(action.budget == 4) and torch.all(action.alpha == 0.05)
    assert policy.act({"x": x}, 1, None) is None
    assert policy.epoch_metrics()["policy/curriculum_steps"] == 4.0
