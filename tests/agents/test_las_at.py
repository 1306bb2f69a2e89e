"""LAS-AT: categorical maths by hand, REINFORCE on a bandit, the look-ahead's isolation,
per-sample cost, tracked distributions, and the three variants end to end."""

import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from agents.base import StepInfo
from agents.las_at.net import categorical_entropy, categorical_log_prob
from agents.las_at.policy import LasAt, LasAtConfig
from envs.attack_loss import AttackLoss
from runners.cotrain import cotrain
from runners.distributions import DistributionHistory
from targets.losses.awp import Awp, AwpConfig
from targets.losses.ce import CrossEntropy, CrossEntropyConfig
from targets.losses.trades import Trades, TradesConfig
from tests.helpers import attack, make_context, target_for


def _context(at_loss_name="ce", attack_loss=AttackLoss.CE):
    return make_context(at_loss_name=at_loss_name, attack_loss=attack_loss)


def test_log_prob_gradient_and_entropy_match_hand_computation():
    logits = torch.tensor([[0.0, math.log(2.0), math.log(3.0)],
                           [1.0, 1.0, 1.0]], requires_grad=True)
    index = torch.tensor([2, 0])
    log_prob = categorical_log_prob(logits, index)
    # softmax rows: (1/6, 2/6, 3/6) and (1/3, 1/3, 1/3)
    torch.testing.assert_close(log_prob, torch.tensor([math.log(0.5), math.log(1 / 3)]))
    reward = torch.tensor([2.0, -1.0])
    loss = -(log_prob * reward).mean()  # the REINFORCE loss of LasAt.reinforce
    loss.backward()
    # d/dz of −r·log p_a / N = −r/N · (onehot(a) − p)
    expected = torch.tensor([[-(-1 / 6), -(-2 / 6), -(1 - 3 / 6)],
                             [0.5 * (1 - 1 / 3), 0.5 * (-1 / 3), 0.5 * (-1 / 3)]])
    torch.testing.assert_close(logits.grad, expected)
    ent = categorical_entropy(logits.detach())
    p = torch.tensor([1 / 6, 2 / 6, 3 / 6])
    torch.testing.assert_close(ent, torch.stack([-(p * p.log()).sum(),
                                                 torch.tensor(math.log(3.0))]))


@pytest.mark.parametrize("mode", ["per_sample", "batch"])
def test_reinforce_concentrates_a_head_on_the_rewarded_value(mode):
    """Toy bandit: reward 1 when the ε head picks grid value #2. The batch mode learns from the
    fraction of samples that picked it (one scalar per batch), so it gets a baseline."""
    baseline = "none" if mode == "per_sample" else "moving_average"
    policy = LasAt(LasAtConfig(interval=1, lr=0.5, reward_mode=mode, baseline=baseline,
                               steps_grid=[1, 2]), _context())
    gen = torch.Generator().manual_seed(0)
    target = policy.space.eps[2]
    x = torch.rand(16, 1, 8, 8, generator=gen)
    obs = {"x": x}
    for _ in range(80):
        action = policy.act(obs, 0, gen)
        hit = ((action.eps - target).abs() < 1e-6).float()
        reward = hit if mode == "per_sample" else hit.mean()
        policy.reinforce(policy._log_prob, reward)
        policy.batches += 1
    with torch.no_grad():
        policy.net.eval()
        probs = torch.softmax(policy.net(x)[0], 1).mean(0)
    assert probs[2] > 0.8 and probs.argmax() == 2, probs


@pytest.mark.parametrize("loss_name", ["ce", "trades", "awp"])
def test_lookahead_leaves_target_weights_and_optimiser_untouched(tiny_net, batch, loss_name):
    at_loss = {"ce": CrossEntropy(CrossEntropyConfig()), "trades": Trades(TradesConfig()),
               "awp": Awp(AwpConfig())}[loss_name]
    kl = loss_name == "trades"
    policy = LasAt(LasAtConfig(interval=1),
                   _context(loss_name, AttackLoss.KL if kl else AttackLoss.CE))
    target = target_for(tiny_net, at_loss)
    x, y = batch
    warm, _ = attack(policy, tiny_net, x, y, seed=5)
    target.step(warm)  # one real step, so the optimiser has momentum buffers
    tiny_net.eval()
    result, _ = attack(policy, tiny_net, x, y)
    inputs = policy.target_inputs(result)
    assert inputs.lookahead and (inputs.beta is not None) == kl
    weights = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    opt_state = {k: v["momentum_buffer"].clone() for k, v in target.optimizer.state.items()}
    shadow = target.lookahead(result, inputs)
    for k, v in tiny_net.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for p, buf in opt_state.items():
        assert torch.equal(target.optimizer.state[p]["momentum_buffer"], buf)
    assert not tiny_net.training
    ahead = dict(shadow.named_parameters())
    assert any(not torch.equal(ahead[k], weights[k]) for k in ahead)  # ŵ took its step
    assert target.lookahead(result, inputs) is shadow  # one reusable shadow buffer
    net_before = [p.clone() for p in policy.net.parameters()]
    out = target.step(result, inputs)
    assert out.lookahead is shadow
    metrics = policy.update(result, target.view(), out,
                            StepInfo(step=0, epoch=0, generator=torch.Generator().manual_seed(1)))
    assert any(not torch.equal(a, b) for a, b in zip(policy.net.parameters(), net_before))
    assert 0 <= metrics["policy/reward_r2"] <= 1 and 0 <= metrics["policy/reward_r3"] <= 1
    a, b = policy.weights
    expected = (metrics["policy/reward_r1"] + a * metrics["policy/reward_r2"]
                + b * metrics["policy/reward_r3"])
    torch.testing.assert_close(metrics["policy/reward"], expected)


def test_attack_costs_the_sum_of_chosen_iterations_and_respects_each_eps(tiny_net, batch):
    policy = LasAt(LasAtConfig(interval=1000), _context())
    x, y = batch
    result, env = attack(policy, tiny_net, x, y)
    assert env.samples_evaluated == int(result.budget.sum())
    assert result.budget.max() > result.budget.min()  # the per-sample budgets differ
    linf = (result.x_adv - x).flatten(1).abs().amax(1)
    assert torch.all(linf <= result.eps + 1e-6)


@pytest.mark.parametrize("loss_name", ["ce", "trades"])
def test_tracked_distributions_sum_to_one_with_an_entry_per_grid_value(tiny_net, batch,
                                                                      loss_name):
    kl = loss_name == "trades"
    policy = LasAt(LasAtConfig(), _context(loss_name, AttackLoss.KL if kl else AttackLoss.CE))
    history = DistributionHistory()
    for key, grid in policy.grids().items():
        history.declare(key, grid)
    x, y = batch
    for seed in range(3):
        result, _ = attack(policy, tiny_net, x, y, seed)
        for key, values in policy.describe(result).items():
            history.add(key, values)
    history.end_epoch(0)
    heads = policy.grids()
    assert set(heads) == ({"eps", "alpha", "steps", "beta"} if kl else {"eps", "alpha", "steps"})
    for key, grid in heads.items():
        (row,) = history.history(key)
        assert len(row["fractions"]) == len(grid) == len(row["values"])
        assert math.isclose(sum(row["fractions"]), 1.0, abs_tol=1e-9)
        assert row["n"] == 3 * len(y)
    assert len(heads["eps"]) == 9 and len(heads["steps"]) == 7  # digits preset grids
    assert policy.epoch_metrics()["policy/entropy"] > 0


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="reward_mode"):
        LasAt(LasAtConfig(reward_mode="nope"), _context())
    with pytest.raises(ValueError, match="steps_grid"):
        LasAt(LasAtConfig(steps_grid=[0, 1]), _context())
    with pytest.raises(ValueError, match="variant"):
        LasAt(LasAtConfig(variant="nope"), _context())


@pytest.mark.parametrize("at_loss", ["ce", "trades", "awp"])
def test_variants_run_end_to_end_and_track_choices(tmp_path, tracking_uri, at_loss):
    run_id = cotrain(["policy=las_at", f"at_loss={at_loss}", "epochs=1", "data.train_subset=256",
                      "data.test_subset=64", "eval.test_subset=32", "eval.final_pgd_steps=2",
                      "policy.interval=1", "policy.reward_pgd_steps=2", "progress=false",
                      f"checkpoint_dir={tmp_path}/ck"], tracking_uri)
    client = MlflowClient(tracking_uri)
    metrics = client.get_run(run_id).data.metrics
    for key in ("policy/eps_mean", "policy/alpha_mean", "policy/steps_mean", "policy/entropy",
                "policy/reward", "policy/reward_r1", "policy/reward_r2", "policy/reward_r3"):
        assert key in metrics, key
    heads = ["eps", "alpha", "steps"] + (["beta"] if at_loss == "trades" else [])
    files = {a.path for a in client.list_artifacts(run_id, "distributions")}
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    for head in heads:
        assert f"distributions/{head}.json" in files and f"plots/{head}_heatmap.png" in plots
