"""``policy=ppo_strategy``: the LAS-AT strategy choice learned by stable-baselines3's PPO.

Same action space as LAS-AT, from the same source (:func:`agents.strategy.space.make_strategy_space`:
per sample, indices into the ε, α, K[, β] grids, ``MultiDiscrete``). Each sample is one
environment and each episode is one step (a contextual bandit): the observation is the clean
image plus cheap per-sample features of the target (its clean loss and true-class confidence),
the action is the strategy, the reward is the loss of the target on the resulting adversarial
example (LAS-AT's R1, clamped to ``[0, reward_clip]``), optionally plus LAS-AT's look-ahead
terms per sample (see ``robust_weight``), computed by the same code as LAS-AT's
(:mod:`agents.strategy.lookahead`, on the target's one-step look-ahead ŵ).

Usage::

    python -m runners.cotrain policy=ppo_strategy                       # digits
    python -m runners.cotrain policy=ppo_strategy policy.n_steps=20 \\
        policy.robust_weight=4 policy.clean_weight=2                     # LAS-AT's look-ahead
    # SB3 drives instead (same policy object, the runner's train_step per batch):
    #   run = build_run(compose_config(["policy=ppo_strategy"]))
    #   learn_with_sb3(runners.train.sb3_driven(run), total_batches=200)

Two drivers share this class:

* The runner (``runners.cotrain``) drives: :meth:`PpoStrategy.act` runs the SB3 policy network
  on the device and samples the strategies with the runner's generator, recording
  observation, action, value and log-probability in a device-resident rollout buffer
  (:class:`agents.ppo.buffer.DeviceRolloutBuffer`); :meth:`PpoStrategy.update` adds the
  per-sample rewards after the target's AT step and, every ``n_steps`` batches, calls PPO's
  own ``train()``. SB3's ``train/*`` logger values are reported as ``ppo/*`` epoch metrics.
* SB3 drives (``model.learn``): :class:`agents.ppo.vec_env.StrategyVecEnv` wraps the same
  co-training; SB3 chooses the actions, the adapter injects them (:meth:`PpoStrategy.inject`),
  and the runner's ``train_step`` attacks, steps the target and computes the rewards with the
  same code as above.

Departures from LAS-AT's reference code (docs/references.md §1), on purpose:
    * the learner is PPO (clipped surrogate, value baseline, advantage normalisation, entropy
      bonus) instead of baseline-free REINFORCE; every batch's samples are training data (LAS-AT
      learns from one batch every k = 20 batches); the strategy net is a small CNN, not a
      ResNet-18, and it also sees the target's clean loss and confidence;
    * the reward is per sample (LAS-AT: one scalar per batch shared by all samples); with
      ``lookahead_per_sample=False`` R2/R3 are batch accuracies as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.distributions import MultiCategoricalDistribution
from stable_baselines3.common.logger import KVWriter, Logger

from learned_at.agents.base import (Policy, PolicyConfig, PolicyContext, PresetContext,
                                   StepInfo, register_policy)
from learned_at.agents.ppo.buffer import DeviceRolloutBuffer
from learned_at.agents.ppo.extractor import SmallCnnExtractor
from learned_at.agents.strategy.lookahead import LookaheadConfig, lookahead_terms
from learned_at.agents.strategy.space import (StrategySpace, Variant, make_strategy_space,
                                              resolve_variant, resolved_grids)
from learned_at.envs.attack_env import AttackAction, Obs
from learned_at.envs.options import (setting, COUNT, FINITE, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, Limit,
                                     parse_option)
from learned_at.envs.requirements import EnvRequirements, Extra
from learned_at.envs.result import AttackResult
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import ATLossOutput
from learned_at.targets.target import TargetView

class Feature(str, Enum):
    """Cheap per-sample target features of the strategy observation."""

    clean_loss = "clean_loss"              # CE at the clean point, clamped to 10
    clean_confidence = "clean_confidence"  # softmax probability of the true class


class StartPoint(str, Enum):
    """Where each sample's attack starts."""

    nominal = "nominal"  # uniform in the run's ε ball, projected into the chosen ball (LAS-AT)
    chosen = "chosen"    # uniform in the chosen ball
    none = "none"        # at the clean input


@dataclass(frozen=True)
class PpoStrategyConfig(PolicyConfig):
    """PPO (stable-baselines3) learning LAS-AT's per-sample attack strategy."""

    limits: ClassVar[dict[str, Limit]] = {
        "n_steps": COUNT, "n_epochs": COUNT, "minibatch_size": Limit(2, integer=True,
        why="advantage normalisation"), "learning_rate": POSITIVE, "clip_range": POSITIVE,
        "ent_coef": NON_NEGATIVE, "vf_coef": NON_NEGATIVE, "max_grad_norm": POSITIVE,
        "features_dim": COUNT, "net_arch": COUNT, "eps_grid": NON_NEGATIVE,
        "alpha_grid": NON_NEGATIVE, "steps_grid": NON_NEGATIVE_INT, "beta_grid": NON_NEGATIVE,
        "reward_clip": POSITIVE, "robust_weight": FINITE, "clean_weight": FINITE,
        "lookahead_steps": NON_NEGATIVE_INT, "lookahead_restarts": COUNT}

    name: str = setting("ppo_strategy", "registry id.")
    n_steps: int = setting(8, "target batches between PPO updates (rollout length; LAS-AT's "
                              "interval k).")
    n_epochs: int = setting(4, "PPO epochs over each rollout.")
    minibatch_size: int = setting(256, "PPO minibatch size (transitions = samples).")
    learning_rate: float = setting(3e-4, "Adam learning rate of the strategy network.")
    clip_range: float = setting(0.2, "PPO's clipping ε.")
    ent_coef: float = setting(0.01, "entropy bonus coefficient.")
    vf_coef: float = setting(0.5, "value loss coefficient.")
    max_grad_norm: float = setting(0.5, "gradient-norm clip of the strategy network.")
    features_dim: int = setting(64, "width of the CNN feature extractor's output.")
    net_arch: list[int] = setting(doc="hidden layers of the policy and value heads on top of the "
                                      "extractor.", factory=lambda: [64])
    features: list[Feature] = setting(doc="cheap per-sample target features in the observation, "
                                          "from clean_loss (CE at the clean point, clamped to 10) "
                                          "and clean_confidence (softmax probability of the true "
                                          "class); empty = the image only.",
                                         factory=lambda: list(Feature))
    variant: Variant = setting(Variant.auto, "the LAS-AT variant whose grids PPO acts on (auto: "
                                             "from the AT loss; the TRADES variant adds the β "
                                             "head, passed per sample to the TRADES loss).")
    eps_grid: list[float] | None = setting(None, "replace a preset grid (None = LAS-AT's).")
    alpha_grid: list[float] | None = setting(None, "replace a preset grid (None = LAS-AT's).")
    steps_grid: list[int] | None = setting(None, "replace a preset grid (None = LAS-AT's).")
    beta_grid: list[float] | None = setting(None, "replace a preset grid (None = LAS-AT's).")
    init: StartPoint = setting(StartPoint.nominal, "random start: nominal (uniform in the run's ε "
                                                   "ball, then projected into each sample's "
                                                   "chosen ball, as LAS-AT's reference), chosen "
                                                   "(uniform in the chosen ball) or none (start "
                                                   "at the clean input).")
    reward_clip: float = setting(10.0, "R1 (the loss on the example) is clamped to [0, "
                                       "reward_clip] (LAS-AT: 10).")
    robust_weight: float = setting(0.0, "weight of R2, the look-ahead ŵ's PGD accuracy "
                                        "(LAS-PGD-AT: 4; 0 = off). With R1 alone the learner "
                                        "drifts to the strongest attack (largest ε and K; see "
                                        "benchmarks/ppo_strategy.py), which is what R2/R3 exist "
                                        "to counter.")
    clean_weight: float = setting(0.0, "weight of R3, the look-ahead ŵ's clean accuracy "
                                       "(LAS-PGD-AT: 2).")
    lookahead_steps: int = setting(10, "PGD steps of R2 (LAS-AT: 10), at the run's ε with α = "
                                       "ε/4.")
    lookahead_restarts: int = setting(2, "PGD restarts of R2 (LAS-AT: 2).")
    lookahead_per_sample: bool = setting(True, "R2/R3 per sample (correctness) instead of batch "
                                               "accuracies.")

    def __post_init__(self) -> None:
        for f in self.features:
            parse_option(Feature, f, "policy.features")

    def resolve(self, preset: PresetContext) -> PpoStrategyConfig:
        """The variant (``auto``: from the AT loss) and the grids (LAS-AT's presets)."""
        variant = resolve_variant(self.variant, preset.at_loss_name)
        grids: dict[str, Any] = resolved_grids(
            preset.geometry, preset.data, variant, preset.eps, eps_grid=self.eps_grid,
            alpha_grid=self.alpha_grid, steps_grid=self.steps_grid, beta_grid=self.beta_grid)
        return replace(self, variant=variant, **grids)


class CaptureOutput(KVWriter):
    """SB3 logger output that keeps the last dumped key/values (for MLflow, as ``ppo/*``)."""

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any],
              step: int = 0) -> None:
        row = {}
        for key, value in key_values.items():
            if isinstance(value, (int, float, np.floating, np.integer)) and np.isfinite(value):
                row["ppo/" + key.split("/", 1)[-1]] = float(value)
        self.records.append(row)


def strategy_observation_space(image_shape: tuple[int, int, int], n_features: int
                               ) -> spaces.Dict:
    """One sample's observation: ``Dict{image: Box[0,1](C,H,W), features: Box(D,)}``."""
    obs: dict[str, spaces.Space] = {"image": spaces.Box(0.0, 1.0, tuple(image_shape),
                                                        np.float32)}
    if n_features:
        obs["features"] = spaces.Box(-np.inf, np.inf, (n_features,), np.float32)
    return spaces.Dict(obs)


def make_ppo(config: PpoStrategyConfig, observation_space: spaces.Dict,
             action_space: spaces.MultiDiscrete, device: torch.device) -> PPO:
    """Build SB3's PPO without an env (spaces given), with the small CNN and device buffer.

    ``seed`` is left unset: SB3 would seed the global RNGs (library code must not); the
    network is initialised from the global torch RNG, which the runner seeds.
    """
    # env=None: SB3 accepts it (the spaces are set below), its annotation does not
    ppo = PPO("MultiInputPolicy", None,  # type: ignore[arg-type]
              learning_rate=config.learning_rate, n_steps=config.n_steps,
              batch_size=config.minibatch_size, n_epochs=config.n_epochs, gamma=0.99,
              gae_lambda=1.0, clip_range=config.clip_range, ent_coef=config.ent_coef,
              vf_coef=config.vf_coef, max_grad_norm=config.max_grad_norm,
              rollout_buffer_class=DeviceRolloutBuffer,
              policy_kwargs={"features_extractor_class": SmallCnnExtractor,
                             "features_extractor_kwargs": {"features_dim": config.features_dim},
                             "net_arch": {"pi": list(config.net_arch),
                                          "vf": list(config.net_arch)},
                             "normalize_images": False},
              device=device, _init_setup_model=False)
    ppo.observation_space, ppo.action_space, ppo.n_envs = observation_space, action_space, 1
    ppo._setup_model()
    return ppo


def device_buffer(ppo: PPO) -> DeviceRolloutBuffer:
    """``ppo``'s rollout buffer, typed: :func:`make_ppo` builds it as a DeviceRolloutBuffer."""
    buffer = ppo.rollout_buffer
    assert isinstance(buffer, DeviceRolloutBuffer)
    return buffer


@register_policy(PpoStrategyConfig)
class PpoStrategy(Policy):
    """Per-sample (ε, α, K[, β]) sampled by an SB3 PPO actor-critic, trained by PPO."""

    not_data_parallel: ClassVar[str] = (
        "policy=ppo_strategy runs in one process only: SB3's PPO update shuffles and normalises its "
        "rollout per minibatch, which a rank's slice would change; run it without torchrun")

    def __init__(self, config: PpoStrategyConfig, context: PolicyContext) -> None:
        super().__init__(config, context)
        config = self.config  # resolved: its presets filled
        self.variant = Variant(config.variant)
        self.space: StrategySpace = make_strategy_space(
            context.geometry, context.data, self.variant, context.eps,
            eps_grid=config.eps_grid, alpha_grid=config.alpha_grid,
            steps_grid=config.steps_grid, beta_grid=config.beta_grid)
        self.start_point = parse_option(StartPoint, config.init, "policy.init")
        self.lookahead = LookaheadConfig(config.lookahead_steps, config.lookahead_restarts)
        self.observation_space = strategy_observation_space(context.image_shape,
                                                            len(config.features))
        self.action_space = self.space.gym_space()
        self.ppo = make_ppo(config, self.observation_space, self.action_space, context.device)
        self.net = self.ppo.policy  # an nn.Module: its weights are in this policy's state_dict
        self.capture = CaptureOutput()
        self.ppo.set_logger(Logger(None, [self.capture]))
        self._pending: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor,
                             torch.Tensor] | None = None
        self._injected: torch.Tensor | None = None
        self._chosen: dict[str, torch.Tensor] = {}
        #: per-sample rewards of the last batch (read by the SB3 adapter), (N,).
        self.last_reward: torch.Tensor | None = None
        self._epoch_records: list[dict[str, float]] = []

    def requirements(self) -> EnvRequirements:
        """The clean logits at reset when the observation has target features."""
        return EnvRequirements(extras=frozenset({Extra.clean_logits}) if self.config.features
                               else frozenset())

    # -- observation and action ---------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor | None
                ) -> dict[str, torch.Tensor]:
        """The strategy observation of a batch, on its device (no host transfer).

        Shape:
            x: (N, C, H, W) in [0, 1]; y: (N,); clean_logits: (N, K) (needed when
            ``features`` is non-empty). Returns {"image": (N, C, H, W), "features": (N, D)}.
        """
        obs = {"image": x.detach().float()}
        if self.config.features:
            if clean_logits is None:
                raise ValueError("ppo_strategy needs the target's clean logits for its features; "
                                 "build the env with the policy's requirements()")
            logits = clean_logits.detach().float()
            values = {
                Feature.clean_loss: F.cross_entropy(logits, y, reduction="none").clamp(max=10.0),
                Feature.clean_confidence: logits.softmax(1).gather(1, y[:, None]).squeeze(1)}
            obs["features"] = torch.stack([values[Feature(k)] for k in self.config.features], 1)
        return obs

    @torch.no_grad()
    def sample(self, obs: dict[str, torch.Tensor], generator: torch.Generator | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample strategies from the SB3 actor-critic with ``generator`` (device-side).

        Returns:
            actions (N, n_heads) int64, values (N,), log_probs (N,).
        """
        net = self.net
        net.set_training_mode(False)
        features = net.extract_features(obs)
        if net.share_features_extractor:
            latent_pi, latent_vf = net.mlp_extractor(features)
        else:
            latent_pi = net.mlp_extractor.forward_actor(features[0])
            latent_vf = net.mlp_extractor.forward_critic(features[1])
        dist = net._get_action_dist_from_latent(latent_pi)
        assert isinstance(dist, MultiCategoricalDistribution)  # a MultiDiscrete action space
        actions = torch.stack([torch.multinomial(c.probs, 1, generator=generator).squeeze(1)
                               for c in dist.distribution], 1)
        return actions, net.value_net(latent_vf).squeeze(1), dist.log_prob(actions)

    def inject(self, actions: torch.Tensor) -> None:
        """Use these strategies (N, n_heads) for the next batch instead of sampling (SB3 drives)."""
        self._injected = actions

    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        if t:
            return None
        if self._injected is not None:
            actions = self._injected.to(obs["x"].device, torch.long)
            self._injected, self._pending = None, None
        else:
            sobs = self.observe(obs["x"], obs["y"], obs.get("clean_logits"))
            actions, values, log_probs = self.sample(sobs, generator)
            self._pending = (sobs, actions, values, log_probs)
        chosen = self._chosen = self.space.decode(actions)
        x = obs["x"]
        init = None
        geometry = self.context.geometry
        if self.start_point is StartPoint.nominal:
            init = geometry.random_delta(x, self.context.eps, generator)
        elif self.start_point is StartPoint.chosen:
            init = geometry.random_delta(x, chosen["eps"], generator)
        return AttackAction(eps=chosen["eps"], alpha=chosen["alpha"], budget=chosen["steps"],
                            init=init)

    def target_inputs(self, result: AttackResult) -> TargetInputs:
        """β per sample (TRADES variant); the look-ahead ŵ when R2/R3 are in the reward."""
        return TargetInputs(beta=self._chosen.get("beta"),
                            lookahead=bool(self.config.robust_weight or self.config.clean_weight))

    # -- learning --------------------------------------------------------------------
    def reward(self, result: AttackResult, out: ATLossOutput, info: StepInfo
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-sample reward r = R1 + robust_weight·R2 + clean_weight·R3, (N,), and its terms.

        R1 is the target's AT loss on the example (from the target's step), clamped; R2 and R3
        come from the look-ahead ŵ (:func:`agents.strategy.lookahead.lookahead_terms`).
        """
        r1 = out.per_sample.detach().float().clamp(0.0, self.config.reward_clip)
        terms = {"policy/reward_loss": r1.mean()}
        reward = r1
        if self.config.robust_weight or self.config.clean_weight:
            t = lookahead_terms(result, out, self.context.geometry, self.context.eps,
                                self.lookahead, info.generator)
            robust, clean = t.r2, t.r3
            if not self.config.lookahead_per_sample:
                robust, clean = robust.mean().expand_as(robust), clean.mean().expand_as(clean)
            reward = reward + self.config.robust_weight * robust + self.config.clean_weight * clean
            terms.update({"policy/reward_robust_acc": robust.mean(),
                          "policy/reward_clean_acc": clean.mean()})
        return reward, terms

    def update(self, result: AttackResult, view: TargetView, out: ATLossOutput,
               info: StepInfo) -> dict[str, torch.Tensor]:
        reward, metrics = self.reward(result, out, info)
        self.last_reward = reward
        metrics["policy/reward"] = reward.mean()
        if self._pending is None:  # SB3 drives (actions were injected): it learns itself
            return metrics
        obs, actions, values, log_probs = self._pending
        self._pending = None
        buffer = device_buffer(self.ppo)
        ones = torch.ones_like(reward)
        buffer.add(obs, actions, reward, ones, values, log_probs)
        self.ppo.num_timesteps += reward.shape[0]
        if buffer.full:
            buffer.compute_returns_and_advantage(torch.zeros_like(reward), ones.bool())
            buffer.generator = info.generator
            total = max(self.context.epochs * self.context.batches_per_epoch, 1)
            self.ppo._current_progress_remaining = max(0.0, 1.0 - info.step / total)
            self.ppo.train()  # SB3's PPO update (host syncs for its logger, once per update)
            self.ppo.logger.dump(self.ppo.num_timesteps)
            self._epoch_records.append(self.capture.records[-1])
            buffer.reset()
        return metrics

    # -- tracking --------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        super().begin_epoch(epoch)
        self._epoch_records = []

    def epoch_metrics(self) -> dict[str, float | torch.Tensor]:
        """Means of SB3's ``train/*`` values over this epoch's PPO updates, as ``ppo/*``."""
        out: dict[str, float | torch.Tensor] = {"ppo/updates": float(len(self._epoch_records))}
        keys = {k for r in self._epoch_records for k in r}
        for k in sorted(keys):
            vals = [r[k] for r in self._epoch_records if k in r]
            out[k] = float(np.mean(vals))
        return out

    def describe(self, result: AttackResult) -> dict[str, torch.Tensor]:
        stats = {k: v.to(result.eps.dtype) for k, v in self._chosen.items()}
        stats["steps_used"] = result.steps.to(result.eps.dtype)
        return stats

    def grids(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.space.heads.items()}

    # -- checkpointing ---------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Adam state of the strategy net, PPO counters, the partial rollout and this epoch's
        PPO update records (a checkpoint may fall in the middle of an epoch)."""
        return {"optimizer": self.net.optimizer.state_dict(),
                "n_updates": int(self.ppo._n_updates),
                "num_timesteps": int(self.ppo.num_timesteps),
                "buffer": device_buffer(self.ppo).state_dict(),
                "epoch_records": [dict(r) for r in self._epoch_records]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.net.optimizer.load_state_dict(state["optimizer"])
        self.ppo._n_updates = int(state["n_updates"])
        self.ppo.num_timesteps = int(state["num_timesteps"])
        device_buffer(self.ppo).load_state_dict(state["buffer"])
        self._epoch_records = [dict(r) for r in state.get("epoch_records", [])]
