"""ppo_strategy: PPO learns the toy's best budget (both drivers), buffer maths, resumable state."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from learned_at.agents.base import StepInfo
from learned_at.agents.ppo.buffer import DeviceRolloutBuffer
from learned_at.agents.ppo.policy import PpoStrategy, PpoStrategyConfig
from learned_at.agents.ppo.vec_env import learn_with_sb3
from learned_at.agents.strategy.lookahead import lookahead_terms
from learned_at.envs.attack_env import target_mode
from tests.agents.ppo_toy import ToyTrainer, toy_context
from tests.helpers import attack, make_context, target_for

FAST = PpoStrategyConfig(n_steps=2, n_epochs=8, minibatch_size=64, learning_rate=3e-3,
                         ent_coef=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _top_share(trainer: ToyTrainer, policy: PpoStrategy, last: int = 2) -> float:
    top = max(policy.space.eps)
    chosen = torch.cat(trainer.chosen_eps[-last:])
    return (chosen == top).float().mean().item()


def test_ppo_concentrates_on_the_largest_eps_when_the_runner_drives():
    torch.manual_seed(0)
    policy = PpoStrategy(FAST, toy_context())
    trainer = ToyTrainer(policy, batch_size=64)
    batch = next(iter(trainer.loader))
    for _ in range(20):
        trainer.step(batch, 0)
    first = (torch.cat(trainer.chosen_eps[:2]) == max(policy.space.eps)).float().mean().item()
    assert first < 0.3  # starts near uniform over 13 values
    assert _top_share(trainer, policy) > 0.8
    metrics = policy.epoch_metrics()
    assert metrics["ppo/updates"] == 10.0
    assert {"ppo/approx_kl", "ppo/clip_fraction", "ppo/entropy_loss", "ppo/value_loss",
            "ppo/policy_gradient_loss", "ppo/explained_variance"} <= set(metrics)


def test_ppo_concentrates_on_the_largest_eps_when_sb3_learn_drives():
    torch.manual_seed(0)
    policy = PpoStrategy(FAST, toy_context())
    trainer = ToyTrainer(policy, batch_size=64, batches=4)
    env = learn_with_sb3(trainer, total_batches=20)
    # 20 batches = 5 passes of 4; the observation of the next step opened a 6th pass
    assert len(trainer.chosen_eps) == 20 and env.epoch == 5
    assert _top_share(trainer, policy) > 0.8
    assert policy.ppo.num_timesteps == 20 * 64


def test_device_buffer_one_step_episodes_advantage_is_reward_minus_value():
    policy = PpoStrategy(FAST, toy_context())
    buf = DeviceRolloutBuffer(2, policy.observation_space, policy.action_space, n_envs=1)
    g = torch.Generator().manual_seed(0)
    n = 5
    for _ in range(2):
        obs = {"image": torch.rand(n, 1, 4, 4, generator=g), "features": torch.rand(n, 2)}
        buf.add(obs, torch.randint(0, 3, (n, 3)), torch.rand(n, generator=g), torch.ones(n),
                torch.rand(n, 1, generator=g), torch.rand(n, generator=g))
    assert buf.full and buf.n_envs == n
    buf.compute_returns_and_advantage(torch.rand(n), torch.ones(n, dtype=torch.bool))
    torch.testing.assert_close(buf.advantages, buf.rewards - buf._values)
    np.testing.assert_allclose(buf.returns, buf.rewards.numpy())
    samples = list(buf.get(4))
    assert [s.actions.shape[0] for s in samples] == [4, 4, 2]
    assert samples[0].observations["image"].shape == (4, 1, 4, 4)
    assert samples[0].actions.dtype == torch.long
    twin = DeviceRolloutBuffer(2, policy.observation_space, policy.action_space)
    twin.load_state_dict(buf.state_dict())
    torch.testing.assert_close(twin.observations["image"], buf.observations["image"])
    torch.testing.assert_close(twin.advantages, buf.advantages)


def test_extra_state_restores_optimizer_counters_and_partial_rollout():
    torch.manual_seed(0)
    policy = PpoStrategy(PpoStrategyConfig(n_steps=3, n_epochs=2, minibatch_size=64),
                         toy_context())
    trainer = ToyTrainer(policy, batch_size=32)
    batch = next(iter(trainer.loader))
    for _ in range(4):  # one PPO update, then one batch in the next rollout
        trainer.step(batch, 0)
    state, extra = policy.state_dict(), policy.extra_state()
    assert extra["n_updates"] == 2 and extra["buffer"]["pos"] == 1
    twin = PpoStrategy(PpoStrategyConfig(n_steps=3, n_epochs=2, minibatch_size=64),
                       toy_context())
    twin.load_state_dict(state)
    twin.load_extra_state(extra)
    assert twin.ppo._n_updates == 2 and twin.ppo.rollout_buffer.pos == 1
    torch.testing.assert_close(twin.ppo.rollout_buffer.rewards,
                               policy.ppo.rollout_buffer.rewards)
    a, b = policy.net.optimizer.state_dict()["state"], twin.net.optimizer.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="policy.features"):
        PpoStrategyConfig(features=["margin"])
    with pytest.raises(ValueError, match="policy.init"):
        PpoStrategy(PpoStrategyConfig(init="gaussian"), toy_context())


def test_reward_adds_the_lookahead_robust_and_clean_terms_with_their_signs(tiny_net, batch):
    """r_i = clamp(R1_i, 0, c) + a·R2_i + b·R3_i (LAS-AT's reward, docs/references.md §1.5,
    per sample): R2 / R3 are ŵ's correctness on its PGD example / on the clean sample and
    count positively (a = 4, b = 2); with ``lookahead_per_sample=False`` they are ŵ's batch
    accuracies."""
    x, _ = batch
    with torch.no_grad():
        y = tiny_net(x).argmax(1)  # the target is right on every clean sample: R3 ≠ 0
    config = PpoStrategyConfig(robust_weight=4.0, clean_weight=2.0, lookahead_steps=3,
                               lookahead_restarts=1)
    torch.manual_seed(0)
    policy = PpoStrategy(config, make_context())
    target = target_for(tiny_net)
    result, _ = attack(policy, tiny_net, x, y)
    inputs = policy.target_inputs(result)
    assert inputs.lookahead
    out = target.step(result, inputs)
    ahead = out.lookahead
    with torch.no_grad(), target_mode(ahead, False):
        r3 = (ahead(x).argmax(1) == y).float()  # ŵ's clean correctness, by hand
    r2 = lookahead_terms(result, out, policy.context.geometry, policy.context.eps,
                         policy.lookahead, torch.Generator().manual_seed(3)).r2
    assert set(r2.tolist()) == {0.0, 1.0} and 0 < r3.sum() < 16  # both terms vary here
    r1 = out.per_sample.clamp(0.0, 10.0)
    reward, terms = policy.reward(result, out, StepInfo(0, 0, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(reward, r1 + 4.0 * r2 + 2.0 * r3)
    torch.testing.assert_close(terms["policy/reward_robust_acc"], r2.mean())
    torch.testing.assert_close(terms["policy/reward_clean_acc"], r3.mean())
    batch_policy = PpoStrategy(replace(config, lookahead_per_sample=False), make_context())
    reward, _ = batch_policy.reward(result, out, StepInfo(0, 0, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(reward, r1 + 4.0 * r2.mean() + 2.0 * r3.mean())
