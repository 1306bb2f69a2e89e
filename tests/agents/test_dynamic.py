"""Dynamic AT: threshold schedule, per-sample FOSC stopping, compaction cost, re-weighting."""

import pytest
import torch
import torch.nn.functional as F

from learned_at.agents.base import make_policy
from learned_at.agents.dynamic import DynamicConfig, fosc_threshold
from learned_at.agents.fixed import PgdAtConfig
from learned_at.envs.geometry import make_geometry
from learned_at.envs.requirements import FoscReference
from learned_at.targets.inputs import TargetInputs
from learned_at.targets.losses.ce import CrossEntropy, CrossEntropyConfig
from tests.helpers import EPS, attack, env_for, make_context


def _context(epochs=6, data="digits", geometry="linf"):
    return make_context(epochs=epochs, data=data, geometry=geometry)


def _attack(policy, model, x, y, seed=0):
    result, env = attack(policy, model, x, y, seed)
    return result.x_adv, result


def test_threshold_schedule_matches_formula():
    policy = make_policy(DynamicConfig(c_max=0.5), _context(epochs=120))
    assert policy.ramp_epochs == pytest.approx(100.0)  # the paper: T' = 100 of 120 epochs
    for t in (0, 1, 37, 99, 100, 119):
        policy.begin_epoch(t)
        assert policy.threshold == pytest.approx(max(0.5 - t * 0.5 / 100, 0.0))
        assert policy.epoch_metrics()["policy/fosc_threshold"] == policy.threshold
    assert fosc_threshold(50, 0.5, 100) == pytest.approx(0.25)
    assert fosc_threshold(120, 0.5, 100) == 0.0


def test_samples_below_threshold_after_step_one_get_no_further_steps(tiny_net, batch):
    x, y = batch
    probe = make_policy(DynamicConfig(c_max=0.0), _context())
    probe.begin_epoch(0)
    env = env_for(tiny_net, probe)
    obs, _ = env.reset(options={"x": x, "y": y})
    obs, *_ = env.step(probe.act(obs, 0, torch.Generator().manual_seed(0)))
    c = float(obs["fosc"].median())  # about half of the samples are below after step 1
    policy = make_policy(DynamicConfig(c_max=c), _context())
    policy.begin_epoch(0)
    adv, r = _attack(policy, tiny_net, x, y)
    below = obs["fosc"] <= c
    assert 0 < below.sum() < len(y)
    assert torch.all(r.steps[below] == 1) and torch.all(r.steps[~below] > 1)
    assert torch.all(r.passes[below] == 2)  # step 1's gradient + the decision pass
    one_step = make_policy(PgdAtConfig(steps=1), _context())
    one, _ = _attack(one_step, tiny_net, x, y)  # same random start (same generator seed)
    torch.testing.assert_close(adv[below], one[below])
    assert not torch.allclose(adv[~below], one[~below])


def test_zero_threshold_runs_full_pgd_and_reports_final_fosc(tiny_net, batch):
    x, y = batch
    policy = make_policy(DynamicConfig(c_max=0.3, steps=4), _context(epochs=6))
    policy.begin_epoch(5)  # past T' = 5: threshold 0
    assert policy.threshold == 0.0
    adv, r = _attack(policy, tiny_net, x, y)
    pgd, _ = _attack(make_policy(PgdAtConfig(steps=4), _context()), tiny_net, x, y)
    torch.testing.assert_close(adv, pgd)
    stats = policy.describe(r)
    assert torch.all(stats["steps"] == 4) and torch.all(stats["passes"] == 5)
    d = (adv - x).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(tiny_net(x + d), y, reduction="sum"), d)
    torch.testing.assert_close(stats["fosc"], make_geometry("linf").fosc(g, adv - x, EPS))


def test_start_reference_option_reaches_the_env(tiny_net, batch):
    policy = make_policy(DynamicConfig(c_max=0.1, fosc_reference="start", final_fosc=False),
                         _context())
    req = policy.requirements()
    assert req.fosc_reference is FoscReference.start and not req.observe_final
    x, y = batch
    _, r = _attack(policy, tiny_net, x, y)
    natural = make_policy(DynamicConfig(c_max=0.1, final_fosc=False), _context())
    _, r_nat = _attack(natural, tiny_net, x, y)
    assert not torch.allclose(r.fosc, r_nat.fosc)  # x⁰ = the random start, not x
    with pytest.raises(ValueError, match="fosc_reference"):
        make_policy(DynamicConfig(c_max=0.1, fosc_reference="x0"), _context())


def test_dynamic_refuses_a_geometry_without_fosc():
    from learned_at.envs.geometry.base import Geometry

    class NoFosc(Geometry):
        pass

    ctx = _context()
    ctx = type(ctx)(**{**vars(ctx), "geometry": NoFosc()})
    with pytest.raises(ValueError, match="FOSC"):
        make_policy(DynamicConfig(c_max=0.1), ctx)


def test_missing_c_max_preset_names_the_fix():
    with pytest.raises(ValueError, match="policy.c_max"):
        make_policy(DynamicConfig(), _context(data="cifar100"))
    assert make_policy(DynamicConfig(), _context()).c_max > 0  # digits has a preset
    assert make_policy(DynamicConfig(), _context(data="cifar10")).c_max == 0.5  # the paper's


def test_reweighting_is_off_by_default_and_weights_by_adversarial_ce(tiny_net, batch):
    x, y = batch
    plain = make_policy(DynamicConfig(c_max=0.1), _context())
    plain.begin_epoch(3)
    _, r = _attack(plain, tiny_net, x, y)
    assert plain.target_inputs(r).weight is None
    policy = make_policy(DynamicConfig(c_max=0.1, reweight=True), _context())
    policy.begin_epoch(0)
    assert policy.target_inputs(r).weight is None  # the code starts re-weighting at epoch 1
    policy.begin_epoch(1)
    w = policy.target_inputs(r).weight
    ce = F.cross_entropy(tiny_net(r.x_adv), y, reduction="none")
    torch.testing.assert_close(w, ce.detach())
    out = CrossEntropy(CrossEntropyConfig()).compute(tiny_net, r, TargetInputs(weight=w))
    torch.testing.assert_close(out.loss, (ce * w).mean())
    with pytest.raises(ValueError, match="final_fosc"):
        make_policy(DynamicConfig(c_max=0.1, reweight=True, final_fosc=False), _context())


def test_cli_run_tracks_fosc_distribution(tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    from learned_at.runners.cotrain import cotrain

    run_id = cotrain(["policy=dynamic", "policy.c_max=0.05", "epochs=2", "batch_size=64",
                      "data.train_subset=128", "data.test_subset=64", "eval.test_subset=32",
                      "eval.final_pgd_steps=2", "progress=false",
                      f"checkpoint_dir={tmp_path}/ck"], tracking_uri)
    client = MlflowClient(tracking_uri)
    metrics = client.get_run(run_id).data.metrics
    for key in ("policy/fosc_p10", "policy/fosc_p50", "policy/fosc_p90", "policy/steps_mean",
                "policy/passes_mean"):
        assert key in metrics, key
    thresholds = [m.value for m in client.get_metric_history(run_id, "policy/fosc_threshold")]
    assert thresholds == pytest.approx([0.05, 0.05 - 0.05 / (2 * 5 / 6)])
    assert 1.0 <= metrics["policy/steps_mean"] <= 10.0
    paths = {a.path for a in client.list_artifacts(run_id, "distributions")}
    paths |= {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"distributions/fosc.json", "plots/fosc_heatmap.png"} <= paths
