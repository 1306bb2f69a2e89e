"""The attack env as a gymnasium ``VectorEnv``, driven as a new user would drive it."""

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.wrappers.vector import ArrayConversion, RecordEpisodeStatistics

from learned_at.envs.attack_env import AttackAction, AttackEnv, EnvConfig
from learned_at.envs.geometry import make_geometry
from learned_at.envs.requirements import EnvRequirements, Extra
from learned_at.targets.loader import Batch

N = 8


class Source:
    """An iterable of batches, as a DeviceLoader is (a short last batch included)."""

    def __init__(self, sizes=(N, N, 5)) -> None:
        self.sizes = sizes

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for i, n in enumerate(self.sizes):
            yield Batch(x=torch.rand(n, 1, 8, 8, generator=g),
                        y=torch.randint(0, 10, (n,), generator=g),
                        index=torch.arange(n) + 100 * i)


def _env(model, **req):
    config = EnvConfig(geometry=make_geometry("linf"), requirements=EnvRequirements(**req),
                       num_classes=10)
    return AttackEnv(model, config, (1, 8, 8), N, max_budget=4, source=Source())


def _contains(space, obs) -> bool:
    return all(space[k].contains(np.asarray(v)) for k, v in obs.items()) and \
        set(obs) == set(space.spaces)


def test_random_actions_through_gymnasium_wrappers(tiny_net):
    env = _env(tiny_net, extras=frozenset({Extra.first_grad, Extra.clean_logits}))
    assert isinstance(env, VectorEnv)
    assert env.metadata["autoreset_mode"] is AutoresetMode.DISABLED
    wrapped = RecordEpisodeStatistics(ArrayConversion(env, env_xp=torch, target_xp=np))
    wrapped.action_space.seed(0)
    checked = 0
    for _ in range(3):  # three batches from the source; the third is short (padded)
        obs, _ = wrapped.reset()
        assert wrapped.observation_space.contains(obs) and _contains(
            wrapped.observation_space, obs)
        assert env.num_envs == N
        for _ in range(6):
            obs, reward, term, trunc, info = wrapped.step(wrapped.action_space.sample())
            assert wrapped.observation_space.contains(obs), {
                k: wrapped.observation_space[k].contains(np.asarray(v)) for k, v in obs.items()}
            assert reward.shape == term.shape == trunc.shape == (N,)
            checked += 1
            if term.all():
                break
    assert checked >= 3
    assert env.n == 5 and np.all(obs["x"][5:] == 0) and not obs["active"][5:].any()


def test_num_envs_is_fixed_and_short_batches_are_padded(tiny_net, batch):
    x, y = batch
    env = _env(tiny_net)
    for n in (N, 3, N):
        obs, _ = env.reset(options={"x": x[:n], "y": y[:n]})
        assert env.num_envs == N and obs["x"].shape[0] == N
        assert env.observation_space.contains({k: v.numpy() for k, v in obs.items()})
        full = torch.full((N,), 0.1)
        obs, _, term, _, info = env.step(AttackAction(eps=full, alpha=full,
                                                      budget=torch.full((N,), 2)))
        assert info["num_active"] == n and bool(term[n:].all())
        result = env.result()
        assert result.x_adv.shape[0] == n  # the record holds the real samples only
    with pytest.raises(ValueError, match="num_envs"):
        env.reset(options={"x": torch.rand(N + 1, 1, 8, 8), "y": torch.zeros(N + 1).long()})


def test_dict_actions_equal_the_dataclass(tiny_net, batch):
    x, y = batch
    eps, alpha = torch.full((N,), 0.1), torch.full((N,), 0.03)
    budget = torch.full((N,), 3)
    results = []
    for as_dict in (False, True):
        env = _env(tiny_net)
        env.reset(options={"x": x[:N], "y": y[:N]})
        action = {"eps": eps.numpy(), "alpha": alpha.numpy(), "budget": budget.numpy()} \
            if as_dict else AttackAction(eps=eps, alpha=alpha, budget=budget)
        env.step(action)
        while env.step(None)[4]["num_active"]:
            pass
        results.append(env.result().x_adv)
    torch.testing.assert_close(results[0], results[1])
    env = _env(tiny_net)
    env.reset(options={"x": x[:N], "y": y[:N]})
    with pytest.raises(ValueError, match="unknown action keys"):
        env.step({"epsilon": eps})


def test_reset_without_options_draws_from_the_source(tiny_net):
    env = _env(tiny_net)
    first, _ = env.reset()
    second, _ = env.reset()
    assert not torch.equal(first["x"], second["x"])
    assert torch.equal(first["index"], torch.arange(N))
    with pytest.raises(ValueError, match="source"):
        AttackEnv(tiny_net, EnvConfig(), (1, 8, 8), N).reset()
