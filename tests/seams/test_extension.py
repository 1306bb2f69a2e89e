"""The seams: a geometry, a policy and an AT loss that needs the attack's internals are each one
class plus its registration — registered here, from the test module, with the evaluation
attacks that apply to the geometry — and the co-training runs them with no runner change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

import learned_at.agents.base as agents_base
import learned_at.envs.geometry.base as geometry_base
import learned_at.targets.losses.base as losses_base
from learned_at.agents.base import Policy, PolicyConfig, register_policy
from learned_at.agents.fixed import uniform_action
from learned_at.envs.attack_env import AttackAction, Obs
from learned_at.envs.attack_loss import AttackLoss
from learned_at.envs.attacks.base import Clean
from learned_at.envs.attacks.gradient import PGD
from learned_at.envs.attacks.registry import register_eval_attack, unregister_eval_attack
from learned_at.envs.geometry.base import (Geometry, GeometryConfig, Scalar, clip_to_box, flat_norm,
                                           per_sample, register_geometry)
from learned_at.envs.requirements import EnvRequirements, Extra
from learned_at.envs.result import AttackResult
from learned_at.runners.cotrain import cotrain
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.base import ATLoss, ATLossConfig, ATLossOutput, register_at_loss
from learned_at.targets.losses.base import soft_cross_entropy


@dataclass(frozen=True)
class HalfBoxConfig(GeometryConfig):
    """A toy geometry: an L∞ box of half the budget, stepped along the raw gradient."""

    name: str = "toy_half_box"


class HalfBox(Geometry):
    default_budgets: ClassVar[dict[str, float]] = {"digits": 0.4}

    def step(self, delta, grad, alpha):
        return delta + per_sample(alpha, delta) * grad / grad.abs().amax((1, 2, 3),
                                                                         keepdim=True).clamp(1e-12)

    def project(self, delta, x, eps: Scalar):
        e = per_sample(eps, delta) / 2
        return clip_to_box(torch.maximum(torch.minimum(delta, e), -e), x)

    def size(self, delta):
        return 2 * flat_norm(delta, float("inf"))

    def random_delta(self, x, eps, generator=None):
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return self.project((2 * u - 1) * per_sample(eps, x), x, eps)

    def erasing_budget(self, image_shape):
        return 1.0


@dataclass(frozen=True)
class ThreeStepsConfig(PolicyConfig):
    """A toy policy: three steps of ε/3 from a random start, and a stop at step 2 for odd
    samples."""

    name: str = "toy_three_steps"


class ThreeSteps(Policy):
    def act(self, obs: Obs, t: int, generator: torch.Generator | None) -> AttackAction | None:
        eps = self.context.eps
        if t == 0:
            init = self.context.geometry.random_delta(obs["x"], eps, generator)
            return uniform_action(obs, eps, eps / 3, 3, init)
        if t == 2:
            odd = torch.arange(obs["x"].shape[0]) % 2 == 1
            return AttackAction(stop=odd)
        return None


SEEN: dict[str, list] = {"alpha": [], "start": [], "first_grad": []}


@dataclass(frozen=True)
class StartAwareConfig(ATLossConfig):
    """A toy AT loss that reads the attack's start point, first gradient and step size."""

    name: str = "toy_start_aware"
    weight: float = 0.1


class StartAware(ATLoss):
    attack_loss: ClassVar[AttackLoss] = AttackLoss.CE
    env_requirements: ClassVar[EnvRequirements] = EnvRequirements(
        extras=frozenset({Extra.first_grad}))

    def compute(self, model: nn.Module, result: AttackResult, inputs: TargetInputs
                ) -> ATLossOutput:
        assert result.first_grad is not None and result.first_grad.abs().sum() > 0
        SEEN["alpha"].append(result.alpha.clone())
        SEEN["start"].append(result.delta0.clone())
        SEEN["first_grad"].append(result.first_grad.clone())
        logits = model(result.x_adv)
        # CE on the example plus a term on the linearised start x₀ + α·sign(∇) (a toy)
        lin = (result.x_init + result.alpha.view(-1, 1, 1, 1) * result.first_grad.sign())
        per = soft_cross_entropy(logits, result.y) + self.config.weight * soft_cross_entropy(
            model(lin.clamp(0, 1)), result.y)
        loss = per.mean()
        return ATLossOutput(loss, {"loss": loss.detach()}, logits.detach(), per.detach())


@pytest.fixture
def toys():
    """Register the three toys for one test, then remove them from the registries."""
    register_geometry(HalfBoxConfig)(HalfBox)
    for attack in (Clean, PGD):  # the evaluation attacks that apply to the toy geometry
        register_eval_attack("toy_half_box", attack)
    register_policy(ThreeStepsConfig)(ThreeSteps)
    register_at_loss(StartAwareConfig)(StartAware)
    yield
    geometry_base.GEOMETRIES.unregister("toy_half_box")
    for attack in (Clean, PGD):
        unregister_eval_attack("toy_half_box", attack)
    agents_base.POLICIES.unregister("toy_three_steps")
    losses_base.AT_LOSSES.unregister("toy_start_aware")


def test_toy_geometry_policy_and_loss_co_train_with_no_runner_change(toys, tmp_path,
                                                                      tracking_uri):
    for v in SEEN.values():
        v.clear()
    run_id = cotrain(["threat=toy_half_box", "policy=toy_three_steps",
                      "at_loss=toy_start_aware", "epochs=1", "data.train_subset=256",
                      "data.test_subset=64", "eval.test_subset=32", "eval.final_pgd_steps=2",
                      "monitor.enabled=false", "progress=false",
                      f"checkpoint_dir={tmp_path}/ck"], tracking_uri)
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.data.tags["threat"] == "toy_half_box"
    assert run.data.params["threat.eps"] == "0.4"  # the geometry's own preset, resolved
    assert run.data.metrics["policy/steps_mean"] == pytest.approx(2.5)  # odd samples stop at 2
    assert len(SEEN["alpha"]) == 2  # two batches of 128
    torch.testing.assert_close(SEEN["alpha"][0], torch.full((128,), 0.4 / 3))
    delta0 = SEEN["start"][0]  # the random start, projected into the half box
    assert delta0.shape == (128, 1, 8, 8) and delta0.abs().max() <= 0.2 + 1e-6
    assert delta0.abs().max() > 0.15
    assert 0 <= run.data.metrics["eval/pgd2_acc"] <= run.data.metrics["eval/clean_acc"]
