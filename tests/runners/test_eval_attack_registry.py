"""Adding an evaluation attack is one class plus one registration, with no runner change: a toy
black-box attack defined and registered here runs through ``evaluate``, the masking checks (as
their black-box side) and the evaluation CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from learned_at.envs.attacks.base import AttackRole, BatchAttack, predict
from learned_at.envs.attacks.registry import register_eval_attack, unregister_eval_attack
from learned_at.envs.geometry import make_geometry
from learned_at.envs.geometry.base import Geometry
from learned_at.runners.masking_checks import CheckConfig, run_masking_checks
from learned_at.runners.robustness import evaluate, parse_attack
from tests.runners.conftest import QuantisedInput
from tests.helpers import run_command

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class UniformNoise(BatchAttack):
    """``noise<Q>``: Q uniform random points of the geometry's ball around x (a black-box
    attack: predictions only); an example falls at the first point that fools the model.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> x_adv (N, C, H, W).
    """

    name: str
    queries: int
    spelling: ClassVar[str] = "noise<Q>"
    roles: ClassVar[AttackRole] = AttackRole.BLACKBOX

    @classmethod
    def parse(cls, name: str) -> UniformNoise | None:
        m = re.fullmatch(r"noise(\d+)", name)
        return None if m is None else cls(name, int(m[1]))

    @classmethod
    def with_queries(cls, queries: int) -> UniformNoise:
        return cls(f"noise{queries}", queries)

    def strength(self) -> tuple[int, ...]:
        return (self.queries,)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, geometry: Geometry,
                eps: float, generator: torch.Generator | None) -> torch.Tensor:
        x_adv, robust = x.clone(), torch.ones_like(y, dtype=torch.bool)
        for _ in range(self.queries):
            candidate = x + geometry.random_delta(x, eps, generator)
            new = robust & (predict(model, candidate, len(x)) != y)
            x_adv[new], robust = candidate[new], robust & ~new
        return x_adv


@contextmanager
def noise_registered(threat: str = "linf") -> Iterator[None]:
    """UniformNoise applies to ``threat`` inside the block, and to nothing afterwards."""
    register_eval_attack(threat, UniformNoise)
    try:
        yield
    finally:
        unregister_eval_attack(threat, UniformNoise)


@pytest.fixture
def noise():
    with noise_registered():
        yield


def test_names_apply_only_where_registered(noise):
    linf, l2 = make_geometry("linf"), make_geometry("l2")
    assert parse_attack("noise20", linf) == UniformNoise("noise20", 20)
    with pytest.raises(ValueError, match="noise20' does not apply to threat=l2; its attacks: "
                                         "clean, fgsm"):
        parse_attack("noise20", l2)
    with pytest.raises(ValueError, match=r"valid: .*noise<Q>"):
        parse_attack("noise", linf)


def test_unregistered_names_are_unknown():
    with pytest.raises(ValueError, match="unknown attack 'noise20' for threat=linf; valid: clean"):
        parse_attack("noise20", make_geometry("linf"))


def test_evaluate_and_checks_use_the_new_attack(noise, digits_model, digits_tensors):
    _, _, x, y = digits_tensors
    x, y, linf, eps = x[:64], y[:64], make_geometry("linf"), 0.2
    attacks = ["clean", "pgd10", "pgd20x2", "noise20"]

    def run(model: nn.Module) -> tuple[dict, dict, dict]:
        masks: dict[str, torch.Tensor] = {}
        res = evaluate(model, x, y, attacks, linf, eps, 32, torch.Generator().manual_seed(0),
                       masks=masks)
        checks = run_masking_checks(model, x, y, linf, eps, res, batch_size=32,
                                    config=CheckConfig(attack="pgd10", square_queries=0))
        return res, masks, {c.name: c for c in checks}

    res, masks, checks = run(digits_model)
    assert torch.all(masks["noise20"] <= masks["clean"])  # never robust when misclassified
    assert res["pgd10"]["acc"] < res["noise20"]["acc"] < res["clean"]["acc"]
    assert res["worst_case"]["acc"] == pytest.approx(
        (masks["clean"] & masks["pgd10"] & masks["pgd20x2"] & masks["noise20"]).float().mean())
    # the checks read the new attack's role: it is their black-box side (no surrogate, no Square)
    bb = checks["blackbox_ge_whitebox"]
    assert bb.status == "pass" and "black-box noise20" in bb.detail
    assert bb.numbers["blackbox_acc"] == res["noise20"]["acc"]
    # a model with masked gradients: random noise beats the stuck white-box PGD
    masked = QuantisedInput(digits_model).eval()
    res, _, checks = run(masked)
    assert res["noise20"]["acc"] < res["pgd20x2"]["acc"]
    assert checks["blackbox_ge_whitebox"].failed, checks["blackbox_ge_whitebox"]


def test_evaluation_cli_runs_the_new_attack(tmp_path, tracking_uri, monkeypatch, capsys):
    from learned_at.runners.cotrain import cotrain
    from learned_at.runners.evaluate import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    ck = f"checkpoint_dir={tmp_path}/ck"
    run_id = cotrain(["policy=pgd_at", "epochs=1", "batch_size=128", "data.train_subset=256",
                      "policy.steps=1", "tracking.log_model=false", "tracking.system_metrics=false",
                      "eval.test_subset=32", "eval.final_pgd_steps=1", "progress=false", ck],
                     tracking_uri)
    argv = [f"run_id={run_id}", "attacks=[clean,pgd3,noise30]", "n_examples=32", "checks=true",
            "check_attack=pgd3", "square_queries=0", "progress=false", ck]
    assert run_command(main, argv) == 2  # not registered yet: refused before any work
    assert "unknown attack 'noise30'" in capsys.readouterr().err
    with noise_registered():
        assert run_command(main, argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\| noise30 \| 0\.2 \| 32 \| ", out, re.MULTILINE), out
    assert re.search(r"^check blackbox_ge_whitebox +(PASS|FAIL) +black-box noise30 ", out, re.MULTILINE)
    eval_id = next(line.split("=", 1)[1] for line in out.splitlines()
                   if line.startswith("evaluation_run_id="))
    m = MlflowClient(tracking_uri).get_run(eval_id).data.metrics
    assert m["eval/worst_case_acc"] <= m["eval/noise30_acc"] <= m["eval/clean_acc"]
    assert "check/blackbox_ge_whitebox" in m  # logged only when the check ran (not skipped)
