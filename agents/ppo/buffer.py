"""A device-resident rollout buffer for stable-baselines3's PPO (drop-in ``rollout_buffer_class``).

SB3's ``RolloutBuffer`` / ``DictRolloutBuffer`` keep numpy arrays on the host, so a rollout on
the GPU pays device -> host -> device per step and a copy per minibatch (docs/references.md §9.1).
This buffer keeps every field as a torch tensor on the policy's device: ``add`` accepts torch
tensors (the co-training path, no host transfer) or numpy arrays (SB3's own ``collect_rollouts``),
and ``get`` yields SB3's ``RolloutBufferSamples`` / ``DictRolloutBufferSamples`` by device-side
indexing. Minibatch order comes from an explicit ``torch.Generator`` (SB3 uses numpy's global
RNG), so a resumed run draws the same minibatches.

The number of environments is fixed at the first ``add`` (the co-training batch size is not
known when the PPO model is built); ``n_envs`` given to the constructor is only a default.

Shapes (T = ``buffer_size`` = PPO's ``n_steps``, N = ``n_envs``):
    observations: {key: (T, N, *shape)} (Dict spaces) or (T, N, *shape);
    actions: (T, N, A) int64/float32; rewards, _returns, advantages, _values, log_probs,
    episode_starts: (T, N) float32 (``values`` / ``returns`` are host copies for SB3's
    ``explained_variance``).
"""

from __future__ import annotations

from typing import Any, Generator

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples, RolloutBufferSamples

_FIELDS = ("rewards", "_returns", "episode_starts", "_values", "log_probs", "advantages")


def _as_tensor(value: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """numpy array / tensor / scalar -> tensor on ``device`` (no copy when already there)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=dtype or value.dtype)
    return torch.as_tensor(np.asarray(value), device=device, dtype=dtype)


def _shape(space: spaces.Space) -> tuple[int, ...]:
    """The shape of a Box observation space (gymnasium types it as optional)."""
    assert space.shape is not None, f"{space} has no shape"
    return space.shape


class DeviceRolloutBuffer(RolloutBuffer):
    """PPO rollout storage as torch tensors on ``device`` (Box or Dict observation spaces).

    Args:
        buffer_size: steps per rollout (T).
        observation_space: one environment's observation space (Box or Dict of Boxes).
        action_space: one environment's action space.
        device: where the tensors live (the policy's device).
        gae_lambda: GAE λ.
        gamma: discount.
        n_envs: default N (replaced by the batch size seen at the first ``add``).
    """

    # Torch tensors where SB3's RolloutBuffer declares numpy arrays (the point of this class;
    # SB3 itself overrides ``distribution`` the same way): each redeclaration is an ignore.
    observations: torch.Tensor | dict[str, torch.Tensor]  # type: ignore[assignment]
    actions: torch.Tensor  # type: ignore[assignment]
    rewards: torch.Tensor  # type: ignore[assignment]
    advantages: torch.Tensor  # type: ignore[assignment]
    episode_starts: torch.Tensor  # type: ignore[assignment]
    log_probs: torch.Tensor  # type: ignore[assignment]
    _values: torch.Tensor
    _returns: torch.Tensor

    def __init__(self, buffer_size: int, observation_space: spaces.Space,
                 action_space: spaces.Space, device: torch.device | str = "cpu",
                 gae_lambda: float = 1.0, gamma: float = 0.99, n_envs: int = 1) -> None:
        #: minibatch order; the owner may replace it with its own (e.g. the runner's) generator.
        self.generator: torch.Generator | None = None
        self._allocated_for = -1
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda,
                         gamma, n_envs)

    # -- storage ---------------------------------------------------------------------
    def _obs_specs(self) -> dict[str, spaces.Space] | None:
        if isinstance(self.observation_space, spaces.Dict):
            return dict(self.observation_space.spaces)
        return None

    def _allocate(self, n_envs: int) -> None:
        t, dev = self.buffer_size, self.device
        self.n_envs = n_envs
        specs = self._obs_specs()
        if specs is None:
            self.observations = torch.zeros((t, n_envs, *_shape(self.observation_space)),
                                            dtype=torch.float32, device=dev)
        else:
            self.observations = {k: torch.zeros((t, n_envs, *_shape(s)), dtype=torch.float32,
                                                device=dev) for k, s in specs.items()}
        act_dtype = torch.float32 if isinstance(self.action_space, spaces.Box) else torch.long
        self.actions = torch.zeros((t, n_envs, self.action_dim), dtype=act_dtype, device=dev)
        for name in _FIELDS:
            setattr(self, name, torch.zeros((t, n_envs), dtype=torch.float32, device=dev))
        self._allocated_for = n_envs

    def reset(self) -> None:
        """Empty the buffer (keeps the allocation)."""
        if self._allocated_for < 0:
            self._allocate(self.n_envs)
        self.pos, self.full, self.generator_ready = 0, False, False

    def add(self, obs: Any, action: Any, reward: Any, episode_start: Any, value: torch.Tensor,
            log_prob: torch.Tensor) -> None:
        """Store one step of N environments (tensors on any device, or numpy arrays).

        Shape:
            obs: {key: (N, *shape)} or (N, *shape); action: (N, A) or (N,); reward,
            episode_start: (N,); value: (N, 1) or (N,); log_prob: (N,).
        """
        n = len(reward)
        if self.pos == 0 and n != self._allocated_for:
            self._allocate(n)
        elif n != self.n_envs:
            raise ValueError(f"rollout step has {n} environments, the buffer holds "
                             f"{self.n_envs}; keep the batch size constant (drop_last=True)")
        dev, p = self.device, self.pos
        if isinstance(self.observations, dict):
            for k, store in self.observations.items():
                store[p] = _as_tensor(obs[k], dev, torch.float32)
        else:
            self.observations[p] = _as_tensor(obs, dev, torch.float32)
        self.actions[p] = _as_tensor(action, dev, self.actions.dtype).reshape(n, self.action_dim)
        self.rewards[p] = _as_tensor(reward, dev, torch.float32).reshape(n)
        self.episode_starts[p] = _as_tensor(episode_start, dev, torch.float32).reshape(n)
        self._values[p] = _as_tensor(value, dev, torch.float32).reshape(n)
        self.log_probs[p] = _as_tensor(log_prob, dev, torch.float32).reshape(n)
        self.pos += 1
        self.full = self.pos == self.buffer_size

    def compute_returns_and_advantage(self, last_values: Any, dones: Any) -> None:
        """GAE(λ) advantages and TD(λ) returns, on the device (a loop over T, not over N).

        Shape:
            last_values: (N, 1) or (N,); dones: (N,) bool, whether the last step ended episodes.
        """
        last_values = _as_tensor(last_values, self.device, torch.float32).reshape(-1)
        done = _as_tensor(dones, self.device, torch.float32).reshape(-1)
        gae = torch.zeros_like(last_values)
        for step in reversed(range(self.buffer_size)):
            if step == self.buffer_size - 1:
                non_terminal, next_values = 1.0 - done, last_values
            else:
                non_terminal = 1.0 - self.episode_starts[step + 1]
                next_values = self._values[step + 1]
            delta = (self.rewards[step] + self.gamma * next_values * non_terminal
                     - self._values[step])
            gae = delta + self.gamma * self.gae_lambda * non_terminal * gae
            self.advantages[step] = gae
        self._returns = self.advantages + self._values

    # SB3's PPO.train reads ``values`` and ``returns`` once per update, through numpy
    # (``explained_variance``); these properties are that one host transfer.
    @property
    def values(self) -> np.ndarray:  # type: ignore[override]
        """Value estimates (T, N) as a host array (a device sync; the tensor is ``_values``)."""
        return self._values.detach().cpu().numpy()

    @property
    def returns(self) -> np.ndarray:  # type: ignore[override]
        """TD(λ) returns (T, N) as a host array (a device sync; the tensor is ``_returns``)."""
        return self._returns.detach().cpu().numpy()

    # -- sampling ----------------------------------------------------------------------
    def get(self, batch_size: int | None = None  # type: ignore[override]  # Box or Dict samples
            ) -> Generator[RolloutBufferSamples | DictRolloutBufferSamples, None, None]:
        """Yield shuffled minibatches of ``batch_size`` transitions (all when None)."""
        if not self.full:
            raise RuntimeError("the rollout buffer is not full; add n_steps steps before get()")
        total = self.buffer_size * self.n_envs
        order = torch.randperm(total, generator=self.generator,
                               device="cpu" if self.generator is None
                               else self.generator.device).to(self.device)
        batch_size = batch_size or total
        for start in range(0, total, batch_size):
            yield self._get_samples(order[start:start + batch_size])

    def _flat(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.buffer_size * self.n_envs, *t.shape[2:])

    def _get_samples(self, batch_inds: torch.Tensor,  # type: ignore[override]  # tensor indices
                     env: Any = None) -> RolloutBufferSamples | DictRolloutBufferSamples:
        pick = lambda t: self._flat(t).index_select(0, batch_inds)  # noqa: E731
        rest = (pick(self.actions), pick(self._values), pick(self.log_probs),
                pick(self.advantages), pick(self._returns))
        if isinstance(self.observations, dict):
            return DictRolloutBufferSamples({k: pick(v) for k, v in self.observations.items()},
                                            *rest)
        return RolloutBufferSamples(pick(self.observations), *rest)

    # -- checkpointing -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Contents and position (tensors and ints only; loads with ``weights_only``)."""
        if self._allocated_for < 0 or self.pos == 0:
            return {"pos": 0}
        obs = self.observations
        return {"pos": self.pos, "n_envs": self.n_envs,
                "observations": {k: v.cpu() for k, v in obs.items()} if isinstance(obs, dict)
                else obs.cpu(), "actions": self.actions.cpu(),
                        **{name: getattr(self, name).cpu() for name in _FIELDS}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if not state.get("pos"):
            self.reset()
            return
        self._allocate(int(state["n_envs"]))
        dev = self.device
        if isinstance(self.observations, dict):
            self.observations = {k: v.to(dev) for k, v in state["observations"].items()}
        else:
            self.observations = state["observations"].to(dev)
        self.actions = state["actions"].to(dev)
        for name in _FIELDS:
            setattr(self, name, state[name].to(dev))
        self.pos, self.generator_ready = int(state["pos"]), False
        self.full = self.pos == self.buffer_size
