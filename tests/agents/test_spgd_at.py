"""sPGD-AT and Fast-LS-ℓ0: budgets, early stop, N-FGSM noise, the policy-declared AT loss, and
the learned strategies choosing per-sample k; Dynamic refuses L0."""

from __future__ import annotations

import pytest
import torch

from learned_at.agents.base import make_policy
from learned_at.agents.dynamic import DynamicConfig
from learned_at.agents.las_at.policy import LasAtConfig
from learned_at.agents.spgd_at import FastLsL0Config, SpgdAtConfig
from learned_at.envs.attacks.saa import predict_labels
from learned_at.envs.geometry.l0 import random_init_l0
from learned_at.runners.compose import compose_config
from learned_at.runners.presets import resolve_config
from tests.helpers import attack, make_context

pytestmark = pytest.mark.usefixtures("one_thread")


def _l0_context(k: float = 4.0, **kw):
    return make_context(geometry="l0", eps=k, **kw)


def test_multi_step_spgd_at_respects_k_and_stops_fooled_samples(tiny_net, batch):
    x, y = batch
    y = predict_labels(tiny_net, x)  # all correct at the start
    policy = make_policy(SpgdAtConfig(steps=20), _l0_context(3.0))
    result, _ = attack(policy, tiny_net, x, y)
    changed = policy.context.geometry.size(result.x_adv - x)
    assert torch.all(changed <= 3) and torch.all((result.x_adv >= 0) & (result.x_adv <= 1))
    fooled = predict_labels(tiny_net, result.x_adv) != y
    assert fooled.any() and torch.all(result.steps[fooled] < 20)  # stopped at their success
    assert torch.all(result.steps[~fooled] == 20)
    stats = policy.describe(result)
    torch.testing.assert_close(stats["pixels"], changed)


def test_training_k_and_nfgsm_noise_set_the_budget(tiny_net, batch):
    x, y = batch
    policy = make_policy(SpgdAtConfig(steps=1, k=6, noise=0.5), _l0_context(4.0))
    result, _ = attack(policy, tiny_net, x, y)
    assert torch.all(result.eps == 9)  # 6 + round(0.5·6)
    assert torch.all(policy.context.geometry.size(result.x_adv - x) <= 9)
    torch.testing.assert_close(result.alpha, torch.full((16,), 0.25))
    fast = make_policy(FastLsL0Config(), _l0_context(4.0))
    assert fast.budget == 12 and fast.config.steps == 1  # k + 2k noise pixels
    with pytest.raises(ValueError, match="exceeds the 64 pixels"):
        make_policy(SpgdAtConfig(k=40, noise=1.0), _l0_context(4.0))


def test_spgd_at_refuses_radius_threats_and_dynamic_refuses_l0():
    with pytest.raises(ValueError, match="needs threat=l0"):
        make_policy(SpgdAtConfig(), make_context())
    with pytest.raises(ValueError, match="FOSC.*threat=l0"):
        make_policy(DynamicConfig(), _l0_context())


def test_fast_ls_l0_selects_strades_with_soft_labels_unless_the_user_picks_a_loss():
    cfg = compose_config(["threat=l0", "threat.k=4", "policy=fast_ls_l0"])
    assert cfg.at_loss.name == "trades" and cfg.at_loss.beta is None  # presets: resolved below
    resolved = resolve_config(cfg).at_loss
    assert resolved.soft_labels.enabled and resolved.beta == 3.0  # β = 3 from the L0 geometry
    own = resolve_config(compose_config(["threat=l0", "policy=fast_ls_l0", "at_loss=ce"]))
    assert own.at_loss.name == "ce" and not own.at_loss.soft_labels.enabled
    field = resolve_config(compose_config(["threat=l0", "policy=fast_ls_l0", "at_loss.beta=5"]))
    assert field.at_loss.name == "trades" and field.at_loss.beta == 5
    assert compose_config(["threat=l0", "policy=spgd_at"]).at_loss.name == "ce"


def test_las_at_chooses_per_sample_k_from_the_l0_grid(tiny_net, batch):
    x, y = batch
    policy = make_policy(LasAtConfig(), _l0_context(4.0))
    assert policy.space.eps == (2.0, 3.0, 4.0, 5.0, 6.0)
    assert policy.space.alpha == (0.125, 0.25, 0.375, 0.5, 0.625)
    result, _ = attack(policy, tiny_net, x, y)
    assert len(set(result.eps.tolist())) > 1  # per-sample budgets
    assert torch.all(policy.context.geometry.size(result.x_adv - x) <= result.eps)
    assert set(policy.grids()["eps"]) == {2.0, 3.0, 4.0, 5.0, 6.0}


def test_ppo_acts_on_the_same_l0_grids():
    from learned_at.agents.ppo.policy import PpoStrategyConfig

    ppo = make_policy(PpoStrategyConfig(), _l0_context(4.0))
    las = make_policy(LasAtConfig(), _l0_context(4.0))
    assert ppo.space == las.space


class _Recording:
    """Wraps a policy; records every observed iterate (x_adv, loss, correct, steps), t ≥ 1."""

    def __init__(self, policy):
        self.policy, self.seen = policy, []

    def act(self, obs, t, generator):
        if t:
            self.seen.append((obs["x_adv"].clone(), obs["loss"].clone(), obs["correct"].clone(),
                              obs["step"].clone()))
        return self.policy.act(obs, t, generator)


class _Biased(torch.nn.Module):
    """``net`` plus ``b`` on class 0's logit: with y = 0, some samples resist a tiny attack."""

    def __init__(self, net, b):
        super().__init__()
        self.net, self.b = net, b

    def forward(self, x):
        z = self.net(x)
        return z + self.b * torch.nn.functional.one_hot(
            torch.zeros(len(x), dtype=torch.long), z.shape[1])


def _iterates(seen, i):
    """Sample i's iterates after the start, one per step it took: (x_adv, loss, correct)."""
    out, last_step = [], 0
    for xa, loss, ok, step in seen:
        if int(step[i]) > last_step:
            out.append((xa[i], loss[i], bool(ok[i])))
            last_step = int(step[i])
    return out


def test_reference_examples_keep_the_best_iterate_and_skip_misclassified(tiny_net, batch):
    """``examples=reference`` (sPGD's training attack): misclassified samples train on the clean
    image without being attacked; a sample the last iterate fools trains on it; any other on
    its highest-loss iterate after the start if that reaches the clean loss, else the clean
    image — rebuilt here from the stream of observed iterates."""
    from learned_at.envs.episode import run_episode
    from tests.helpers import env_for

    x, _ = batch
    model = _Biased(tiny_net, 0.3).eval()
    y = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        clean_logits = model(x)
    wrong = clean_logits.argmax(1) != y
    clean_loss = torch.nn.functional.cross_entropy(clean_logits, y, reduction="none")
    policy = make_policy(SpgdAtConfig(steps=6, k=2, early_stop=False, examples="reference"),
                         _l0_context(2.0))
    recorder = _Recording(policy)
    env = env_for(model, policy, n=len(y))
    result = run_episode(env, recorder, x, y, generator=torch.Generator().manual_seed(4))
    assert wrong.any() and torch.equal(result.x_adv[wrong], x[wrong])
    assert torch.all(result.steps[wrong] == 0)
    expected, kinds = x.clone(), {"last": 0, "best": 0, "clean": 0}
    for i in (~wrong).nonzero().flatten().tolist():
        iterates = _iterates(recorder.seen, i)
        assert len(iterates) == 6
        kind, best = "clean", clean_loss[i]
        if not iterates[-1][2]:  # the last iterate fools the model
            expected[i], kind = iterates[-1][0], "last"
        else:
            for xa, loss, _ in iterates:
                if loss >= best:
                    best, expected[i], kind = loss, xa, "best"
        kinds[kind] += 1
    torch.testing.assert_close(result.x_adv, expected)
    assert kinds["best"] > 0 and kinds["last"] > 0, kinds
    plain = make_policy(SpgdAtConfig(steps=6, k=2, early_stop=False), _l0_context(2.0))
    assert not plain.requirements().keep_best


def test_spgd_at_starts_from_spgds_random_start_over_the_whole_budget(tiny_net, batch):
    """sPGD's random start (docs/references.md §6.2: k random pixels, U(−1, 1) box-clipped
    magnitudes), over k + ⌊noise·k⌉ pixels with N-FGSM noise (§6.7.10): the episode's start
    δ₀ is ``random_delta`` drawn first from the episode's generator, never δ₀ = 0."""
    x, y = batch
    policy = make_policy(SpgdAtConfig(steps=2, k=3, noise=1 / 3), _l0_context(3.0))
    assert policy.budget == 4  # 3 + round(1)
    result, _ = attack(policy, tiny_net, x, y, seed=7)
    expected = random_init_l0(x, 4.0, torch.Generator().manual_seed(7))
    torch.testing.assert_close(result.delta0, expected)
    assert torch.all(policy.context.geometry.size(result.delta0) == 4)
