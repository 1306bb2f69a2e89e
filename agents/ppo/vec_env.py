"""An SB3 ``VecEnv`` over co-training, for ``PPO.learn`` to drive the ``ppo_strategy`` policy.

Sub-environment ``i`` is sample ``i`` of the current training batch (``num_envs`` = the batch
size). The observation is the strategy observation of :meth:`PpoStrategy.observe` (clean image
and cheap target features), the action is the LAS-AT strategy (``MultiDiscrete`` indices into
the ε, α, K grids). ``step(actions)``:

1. injects the actions into the ``ppo_strategy`` policy (:meth:`PpoStrategy.inject`);
2. calls the co-training's step on the batch (the runner's own ``train_step``: attack through
   the attack env, the target's AT step, distributions, and ``policy.update``, which computes
   the per-sample rewards and, because the actions were injected, does not learn itself);
3. draws the next batch (a new epoch starts when the loader is exhausted) and observes it.

Every episode is one step: ``dones`` is all True, ``infos[i]["terminal_observation"]`` is
sample i's observation of the batch just attacked and ``TimeLimit.truncated`` is False (a true
terminal, so SB3 never bootstraps with its per-env Python loop). Autoreset is SB3's: the
returned observation is already the next episode's.

Observations cross to SB3 as numpy, one device-to-host copy per key per batch (SB3's
``collect_rollouts`` needs numpy); the attack and the target step stay on the target's
device. ``infos`` is a lazy sequence: a per-sample dict is built only when SB3 reads it.

What it drives is a :class:`Driven` co-training: its ``policy`` (a
:class:`~agents.ppo.policy.PpoStrategy`), the target ``model`` (for the observation's
features), its ``loader`` (an iterable of :class:`targets.loader.Batch` with ``batch_size``)
and its per-batch ``step(batch, epoch)``; :func:`runners.train.sb3_driven` builds one from a
run (the step is :func:`runners.train.train_step`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from learned_at.agents.ppo.policy import PpoStrategy
from learned_at.envs.attack_env import target_mode


class TerminalInfos(Sequence):
    """``infos`` of one SB3 step, built per index on access (no per-sample loop up front)."""

    def __init__(self, terminal_obs: dict[str, np.ndarray], n: int) -> None:
        self.terminal_obs, self.n = terminal_obs, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]  # type: ignore[return-value]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return {"terminal_observation": {k: v[i] for k, v in self.terminal_obs.items()},
                "TimeLimit.truncated": False}


@dataclass(frozen=True)
class Driven:
    """A co-training that SB3 drives one batch at a time.

    Attributes:
        policy: the ``ppo_strategy`` policy.
        model: the target (the observation's features are its clean outputs).
        loader: the training batches (a new pass per epoch; ``batch_size`` per batch).
        step: ``step(batch, epoch)``: the co-training's whole step on one batch.
    """

    policy: Any
    model: Any
    loader: Iterable[Any]
    step: Callable[[Any, int], Any]


class StrategyVecEnv(VecEnv):
    """SB3 vector env whose sub-envs are the samples of the co-training's current batch.

    Args:
        driven: the co-training, with a ``ppo_strategy`` policy.
        epoch: epoch counter passed to its step (0-based); advanced on each new pass.
    """

    render_mode = None  # nothing to render

    def __init__(self, driven: Driven, epoch: int = 0) -> None:
        policy = driven.policy
        if not isinstance(policy, PpoStrategy):
            raise TypeError("StrategyVecEnv needs policy=ppo_strategy, got "
                            f"{type(policy).__name__}")
        self.driven, self.policy = driven, policy
        self.epoch = epoch
        self._it: Iterator[Any] | None = None
        self._batch: Any = None
        self._obs: dict[str, np.ndarray] | None = None
        self._actions: np.ndarray | None = None
        super().__init__(driven.loader.batch_size, policy.observation_space,  # type: ignore
                         policy.action_space)

    # -- batches ------------------------------------------------------------------------
    def _draw(self) -> dict[str, np.ndarray]:
        """Next batch (new epoch when the loader is exhausted), observed as numpy."""
        assert self._it is not None
        try:
            self._batch = next(self._it)
        except StopIteration:
            self.epoch += 1
            self.policy.begin_epoch(self.epoch)
            self._it = iter(self.driven.loader)
            self._batch = next(self._it)
        b = self._batch
        clean_logits = None
        if self.policy.config.features:
            with torch.no_grad(), target_mode(self.driven.model, False):
                clean_logits = self.driven.model(b.x)
        obs = self.policy.observe(b.x, b.y, clean_logits)
        self._obs = {k: v.cpu().numpy() for k, v in obs.items()}  # one copy per key
        return self._obs

    # -- SB3 VecEnv API ---------------------------------------------------------------
    def reset(self) -> dict[str, np.ndarray]:
        """Start a pass over the training data; returns the first batch's observations."""
        self.policy.begin_epoch(self.epoch)
        self._it = iter(self.driven.loader)
        self._reset_seeds()
        self._reset_options()
        return self._draw()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    # infos is a lazy Sequence (TerminalInfos) where SB3 annotates a list: hence the ignore
    def step_wait(self  # type: ignore[override]
                  ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, TerminalInfos]:
        """Attack the batch with the actions, take the target step, observe the next batch.

        Returns:
            obs {key: (N, ...)}, rewards (N,) float32, dones (N,) bool (all True), infos.
        """
        if self._batch is None or self._actions is None:
            raise RuntimeError("call reset() and step_async(actions) before step_wait()")
        device = self._batch.x.device
        actions = torch.as_tensor(np.asarray(self._actions), device=device).long()
        actions = actions.reshape(self.num_envs, -1)
        self.policy.inject(actions)
        self.driven.step(self._batch, self.epoch)
        assert self.policy.last_reward is not None
        rewards = self.policy.last_reward.float().cpu().numpy()
        terminal = self._obs
        assert terminal is not None
        obs = self._draw()
        self._actions = None
        return obs, rewards, np.ones(self.num_envs, dtype=bool), TerminalInfos(terminal,
                                                                                self.num_envs)

    def close(self) -> None:
        self._it, self._batch, self._obs = None, None, None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The adapter's own attribute, once per selected sub-env (they share one object)."""
        return [getattr(self, attr_name)] * len(list(self._get_indices(indices)))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result] * len(list(self._get_indices(indices)))

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))


def learn_with_sb3(driven: Driven, total_batches: int) -> StrategyVecEnv:
    """Let SB3's ``PPO.learn`` drive ``total_batches`` co-training batches (same policy net).

    The policy's own PPO model (``driven.policy.ppo``) is attached to a
    :class:`StrategyVecEnv` over ``driven`` and trained for ``total_batches · batch_size``
    timesteps; its ``n_steps`` is still the number of batches between PPO updates.

    Returns:
        The adapter (holding the epoch counter reached).
    """
    env = StrategyVecEnv(driven)
    ppo = driven.policy.ppo
    ppo.n_envs = env.num_envs  # built without an env; the buffer sizes itself on its first add
    ppo.set_env(env, force_reset=True)
    ppo.learn(total_timesteps=total_batches * env.num_envs, reset_num_timesteps=False)
    return env
