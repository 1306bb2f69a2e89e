"""StrategyVecEnv conformance: the checks of gymnasium and SB3 that apply to a VecEnv.

``gymnasium.utils.env_checker.check_env`` and ``stable_baselines3.common.env_checker.check_env``
take a single ``gym.Env`` (no vector-env checker exists in gymnasium 1.4 or SB3 2.9), and their
determinism checks (same observations after ``reset(seed=s)``) do not apply: a reset does not
rewind the target's training, and an episode's outcome depends on the co-trained target. The
checks they are built from do apply, per sub-environment: gymnasium's
``check_observation_space`` / ``check_action_space`` / ``check_obs`` and SB3's ``_check_unsupported_spaces`` / ``_check_obs``; at the VecEnv level SB3's
own ``VecCheckNan`` and ``VecMonitor`` wrappers and ``check_for_correct_spaces`` (what
``set_env`` runs). The rest is a contract test of SB3's VecEnv API: shapes, dtypes, all-done
one-step episodes with ``terminal_observation``, and no bootstrapping (``TimeLimit.truncated``
False).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.passive_env_checker import (check_action_space, check_obs,
                                                 check_observation_space)
from stable_baselines3.common.env_checker import _check_obs, _check_unsupported_spaces
from stable_baselines3.common.utils import check_for_correct_spaces
from stable_baselines3.common.vec_env import VecCheckNan, VecMonitor

from learned_at.agents.ppo.policy import PpoStrategy, PpoStrategyConfig
from learned_at.agents.ppo.vec_env import StrategyVecEnv
from tests.agents.ppo_toy import SHAPE, ToyTrainer, toy_context

N = 16


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def venv() -> StrategyVecEnv:
    torch.manual_seed(0)
    policy = PpoStrategy(PpoStrategyConfig(n_steps=2, minibatch_size=16), toy_context())
    return StrategyVecEnv(ToyTrainer(policy, batch_size=N, batches=3))


def test_spaces_are_what_sb3_supports(venv):
    obs_space, act_space = venv.observation_space, venv.action_space
    with warnings.catch_warnings():  # gymnasium's checks warn on a questionable Box: fail then
        warnings.simplefilter("error")
        check_observation_space(obs_space)  # every sub-space, Boxes with gymnasium's Box check
        check_action_space(act_space)
    assert obs_space["image"].shape == SHAPE and obs_space["image"].dtype == np.float32
    assert obs_space["features"].shape == (2,)
    assert act_space.nvec.tolist() == [13, 5, 12]  # ε, α, K grids (LAS-AT README sizes)
    assert not _check_unsupported_spaces(None, obs_space, act_space)  # no warning-worthy space
    check_for_correct_spaces(venv, obs_space, act_space)


def test_reset_and_step_follow_the_sb3_vecenv_api(venv):
    obs = venv.reset()
    assert set(obs) == {"image", "features"}
    assert obs["image"].shape == (N, *SHAPE) and obs["image"].dtype == np.float32
    assert obs["features"].shape == (N, 2) and obs["features"].dtype == np.float32
    for i in (0, N - 1):  # gymnasium's and SB3's per-observation checks, per sub-env
        one = {k: v[i] for k, v in obs.items()}
        check_obs(one, venv.observation_space, "reset")
        _check_obs(one, venv.observation_space, "reset")
        assert venv.observation_space.contains(one)
    actions = np.stack([venv.action_space.sample() for _ in range(N)])
    new_obs, rewards, dones, infos = venv.step(actions)
    assert rewards.shape == (N,) and rewards.dtype == np.float32 and np.all(rewards >= 0)
    assert dones.shape == (N,) and dones.dtype == bool and dones.all()  # one-step episodes
    assert len(infos) == N and infos[N - 1]["TimeLimit.truncated"] is False
    np.testing.assert_array_equal(infos[3]["terminal_observation"]["image"], obs["image"][3])
    assert new_obs["image"].shape == (N, *SHAPE)
    chosen = venv.policy.describe(venv.driven.env)
    eps_grid = np.array(venv.policy.space.eps, dtype=np.float32)
    np.testing.assert_allclose(chosen["eps"].numpy(), eps_grid[actions[:, 0]])


def test_rewards_follow_the_injected_strategy(venv):
    venv.reset()
    top = np.tile([12, 4, 11], (N, 1))  # largest ε, α, K: the toy's best strategy
    bottom = np.zeros((N, 3), dtype=np.int64)
    _, r_top, _, _ = venv.step(top)
    _, r_bottom, _, _ = venv.step(bottom)
    assert r_top.min() > r_bottom.max()
    assert venv.driven.env.steps.tolist() == [3] * N  # K grid starts at 3


def test_sb3_wrappers_accept_it(venv):
    wrapped = VecMonitor(VecCheckNan(venv, raise_exception=True))
    wrapped.reset()
    for _ in range(4):  # crosses an epoch boundary (3 batches per pass)
        _, rewards, dones, infos = wrapped.step(np.stack([venv.action_space.sample()
                                                          for _ in range(N)]))
    assert np.isfinite(rewards).all() and dones.all()
    assert infos[0]["episode"]["l"] == 1  # VecMonitor saw one-step episodes
    assert venv.epoch == 1
