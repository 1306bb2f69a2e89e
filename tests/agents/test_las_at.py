"""LAS-AT: categorical maths by hand, REINFORCE on a bandit, the look-ahead's isolation,
per-sample cost, tracked distributions, and the three variants end to end."""

import copy
import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from learned_at.agents.base import StepInfo, make_policy
from learned_at.agents.las_at.net import categorical_entropy, categorical_log_prob
from learned_at.agents.las_at.policy import LasAtConfig
from learned_at.envs.attack_loss import AttackLoss
from learned_at.runners.validation import config_problems
from learned_at.runners.cotrain import cotrain
from learned_at.runners.distributions import DistributionHistory
from learned_at.targets.losses.awp import Awp, AwpConfig
from learned_at.targets.losses.base import soft_cross_entropy
from learned_at.targets.losses.ce import CrossEntropy, CrossEntropyConfig
from learned_at.targets.losses.trades import Trades, TradesConfig
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


def _bandit(policy, steps, batch_size=16, offset=0.0):
    """REINFORCE on a toy bandit: reward 1 when the ε head picks grid value #2 (per sample, or
    the fraction of the batch, plus ``offset``, in batch mode). Returns p(#2) at the end."""
    gen = torch.Generator().manual_seed(0)
    target = policy.space.eps[2]
    x = torch.rand(batch_size, 1, 8, 8, generator=gen)
    for _ in range(steps):
        action = policy.act({"x": x}, 0, gen)
        hit = ((action.eps - target).abs() < 1e-6).float()
        reward = hit if policy.reward_mode.value == "per_sample" else hit.mean() + offset
        policy.reinforce(policy._log_prob, reward)
        policy.batches += 1
    with torch.no_grad():
        policy.net.eval()
        return torch.softmax(policy.net(x)[0], 1).mean(0)


@pytest.mark.parametrize("mode,baseline", [("per_sample", "none"), ("batch", "none"),
                                           ("batch", "moving_average")])
def test_reinforce_concentrates_a_head_on_the_rewarded_value(mode, baseline):
    """The faithful form (one scalar reward per batch, no baseline) learns a bandit whose
    reward is 0 unless the batch hits; per-sample rewards and the baseline learn it too."""
    torch.manual_seed(0)
    policy = make_policy(LasAtConfig(interval=1, lr=0.5, reward_mode=mode, baseline=baseline,
                               steps_grid=[1, 2]), _context())
    probs = _bandit(policy, 80 if baseline == "moving_average" or mode == "per_sample" else 200)
    assert probs[2] > 0.8 and probs.argmax() == 2, probs


@pytest.mark.parametrize("loss_name", ["ce", "trades", "awp"])
def test_lookahead_leaves_target_weights_and_optimiser_untouched(tiny_net, batch, loss_name):
    at_loss = {"ce": CrossEntropy(CrossEntropyConfig()), "trades": Trades(TradesConfig()),
               "awp": Awp(AwpConfig())}[loss_name]
    kl = loss_name == "trades"
    policy = make_policy(LasAtConfig(interval=1),
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


def _smoothed_ce(policy):
    """The run's CE loss with the policy's label smoothing (one setting: runners/presets.py)."""
    from learned_at.targets.losses.ce import CrossEntropy, CrossEntropyConfig

    return CrossEntropy(CrossEntropyConfig(true_class_prob=policy.config.true_class_prob))


def _plain_sgd_step(model, x_adv, y, lr, weight_decay, true_class_prob):
    """w − lr·(∇ LS-CE(f_w(x_adv), y) + wd·w), the forward in train mode, on a copy."""
    ref = copy.deepcopy(model).train()
    loss = soft_cross_entropy(ref(x_adv), y, true_class_prob).mean()
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    return {k: (p - lr * (g + weight_decay * p)).detach()
            for (k, p), g in zip(ref.named_parameters(), grads)}, loss.detach()


def test_lookahead_is_one_plain_sgd_step_before_the_target_step_with_smoothing(tiny_net, batch):
    """ŵ = w − lr·(∇L + wd·w) at the target's current lr and weight decay, no momentum, on the
    weights *before* the target's step; LAS-PGD-AT's label smoothing (0.7) reaches both."""
    policy = make_policy(LasAtConfig(interval=1, true_class_prob=0.7), _context())
    target = target_for(tiny_net, _smoothed_ce(policy), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = batch
    for step, lr in enumerate((0.1, 0.03)):  # the second ŵ would see momentum if it kept any
        for group in target.optimizer.param_groups:
            group["lr"] = lr
        tiny_net.eval()
        result, _ = attack(policy, tiny_net, x, y, seed=step)
        inputs = policy.target_inputs(result)
        assert inputs.lookahead and policy.config.true_class_prob == 0.7
        expected, loss_w = _plain_sgd_step(tiny_net, result.x_adv, y, lr, 5e-4, 0.7)
        out = target.step(result, inputs)
        torch.testing.assert_close(out.loss, loss_w)  # the target's step: smoothed, at w
        ahead = dict(out.lookahead.named_parameters())
        for k, v in expected.items():
            torch.testing.assert_close(ahead[k], v, msg=k)
        policy.update(result, target.view(), out,
                      StepInfo(step=step, epoch=0, generator=torch.Generator().manual_seed(1)))


def test_lookahead_smoothing_alone_reaches_the_lookahead_and_not_the_target(tiny_net, batch):
    """LAS-AWP's reference: ŵ's step smoothed with 0.7 (``lookahead_true_class_prob``), the
    target's step on plain CE."""
    policy = make_policy(LasAtConfig(interval=1, lookahead_true_class_prob=0.7), _context())
    assert policy.config.true_class_prob == 1.0  # digits preset: the target is not smoothed
    target = target_for(tiny_net, _smoothed_ce(policy), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = batch
    tiny_net.eval()
    result, _ = attack(policy, tiny_net, x, y)
    inputs = policy.target_inputs(result)
    assert inputs.lookahead_true_class_prob == 0.7
    expected, _ = _plain_sgd_step(tiny_net, result.x_adv, y, 0.1, 5e-4, 0.7)
    _, plain_loss = _plain_sgd_step(tiny_net, result.x_adv, y, 0.1, 5e-4, 1.0)
    out = target.step(result, inputs)
    torch.testing.assert_close(out.loss, plain_loss)  # the target's step: plain CE
    ahead = dict(out.lookahead.named_parameters())
    for k, v in expected.items():
        torch.testing.assert_close(ahead[k], v, msg=k)
    assert target.loss.true_class_prob == 1.0  # the smoothing ended with the look-ahead


def test_r1_at_w_is_the_eval_mode_ce_before_the_step_not_the_awp_forward(tiny_net, batch):
    """``r1_at=w`` (LAS-AWP's preset): R1 = CE of f_w in eval mode on the examples, before the
    target's step — not the AWP step's forward at the perturbed weights w + v."""
    x, y = batch
    policy = make_policy(LasAtConfig(interval=1, r1_at="w", reward_pgd_steps=2),
                         _context("awp"))
    target = target_for(tiny_net, Awp(AwpConfig(gamma=0.5)))
    result, _ = attack(policy, tiny_net, x, y)
    tiny_net.eval()
    with torch.no_grad():
        at_w = torch.nn.functional.cross_entropy(tiny_net(result.x_adv), y)
    tiny_net.train()
    inputs = policy.target_inputs(result)
    assert inputs.logits_before
    out = target.step(result, inputs)
    metrics = policy.update(result, target.view(), out,
                            StepInfo(step=0, epoch=0, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(metrics["policy/reward_r1"], at_w.clamp(0, 10))
    at_w_plus_v = torch.nn.functional.cross_entropy(out.logits_adv, y)
    assert abs(float(at_w_plus_v - at_w)) > 1e-3  # the two readings differ here


def test_attack_costs_the_sum_of_chosen_iterations_and_respects_each_eps(tiny_net, batch):
    policy = make_policy(LasAtConfig(interval=1000), _context())
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
    policy = make_policy(LasAtConfig(), _context(loss_name, AttackLoss.KL if kl else AttackLoss.CE))
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
        make_policy(LasAtConfig(reward_mode="nope"), _context())
    with pytest.raises(ValueError, match="steps_grid"):
        make_policy(LasAtConfig(steps_grid=[0, 1]), _context())
    with pytest.raises(ValueError, match="variant"):
        make_policy(LasAtConfig(variant="nope"), _context())


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


def test_presets_follow_the_reference_per_variant_and_data_set():
    from learned_at.agents.las_at.preset import preset_settings
    from learned_at.agents.strategy.space import Variant

    ce, trades, awp = (preset_settings("cifar10", v) for v in
                       (Variant.pgd_at, Variant.trades, Variant.awp))
    assert preset_settings("digits", Variant.pgd_at)["true_class_prob"] == 1.0  # measured
    assert (ce["true_class_prob"], trades["true_class_prob"], awp["true_class_prob"]) == (
        0.7, 1.0, 1.0)
    assert (ce["final_clip"], trades["final_clip"], awp["final_clip"]) == (False, False, True)
    # LAS-AWP: plain CE for the target, 0.7 for ŵ's step alone, R1 read at w
    assert (ce["lookahead_true_class_prob"], awp["lookahead_true_class_prob"]) == (None, 0.7)
    assert (ce["r1_at"], trades["r1_at"], awp["r1_at"]) == ("step", "step", "w")
    assert preset_settings("digits", Variant.awp)["lookahead_true_class_prob"] is None
    c100 = preset_settings("cifar100", Variant.pgd_at)
    assert c100["momentum"] == 0.9 and c100["true_class_prob"] == 0.6 and ce["momentum"] == 0.0
    cifar = make_context(eps=8 / 255, data="cifar100", image_shape=(3, 32, 32))
    units = {h: [round(v * 255) for v in g] if h in ("eps", "alpha") else [int(v) for v in g]
             for h, g in make_policy(LasAtConfig(trunk="small_cnn"), cifar).grids().items()}
    assert units["steps"] == list(range(3, 13)) and units["eps"] == list(range(3, 16))
    trades_ctx = make_context(eps=8 / 255, data="cifar100", image_shape=(3, 32, 32),
                              at_loss_name="trades", attack_loss=AttackLoss.KL)
    grids = make_policy(LasAtConfig(trunk="small_cnn"), trades_ctx).grids()
    assert [round(v * 255) for v in grids["eps"]] == list(range(5, 11))
    awp_ctx = make_context(eps=8 / 255, data="cifar100", image_shape=(3, 32, 32),
                           at_loss_name="awp")
    assert make_policy(LasAtConfig(trunk="small_cnn"), awp_ctx).grids()["steps"] == [
        float(k) for k in range(8, 16)]
    # LAS-TRADES' preset is no smoothing: the loss's own setting (1.0 unless the user sets one)
    assert make_policy(LasAtConfig(trunk="small_cnn"), trades_ctx).config.true_class_prob == 1.0


def test_final_clip_projects_the_last_step_onto_the_nominal_budget(tiny_net, batch):
    """LAS-AWP's reference: ε above the nominal one only changes the intermediate projections;
    the result is the unclipped attack's δ clamped to the nominal ε."""
    x, y = batch
    ctx = _context("awp")
    clipped_policy = make_policy(LasAtConfig(interval=1000), ctx)
    assert clipped_policy.final_clip
    plain_policy = make_policy(LasAtConfig(interval=1000, final_clip=False), ctx)
    plain_policy.load_state_dict(clipped_policy.state_dict())
    clipped, _ = attack(clipped_policy, tiny_net, x, y, seed=3)
    plain, _ = attack(plain_policy, tiny_net, x, y, seed=3)
    nominal = ctx.eps
    assert plain.delta.abs().amax() > nominal + 1e-3  # the policy chose larger budgets
    torch.testing.assert_close(clipped.delta, plain.delta.clamp(-nominal, nominal))
    assert torch.equal(clipped_policy.describe(clipped)["eps"], plain.eps)  # chosen ε tracked


def test_reward_forms_and_clamps_by_hand():
    from learned_at.agents.strategy.lookahead import RewardTerms

    terms = RewardTerms(r1=torch.tensor([30.0, 2.0]), r2=torch.tensor([1.0, 0.0]),
                        r3=torch.tensor([1.0, 1.0]), ce_robust=torch.tensor([0.5, 4.5]),
                        ce_clean=torch.tensor([0.1, 0.3]))
    acc = make_policy(LasAtConfig(reward_mode="batch"), _context())  # (a, b) = (4, 2), clamp 10
    torch.testing.assert_close(acc.reward(terms), torch.tensor(10.0 + 4 * 0.5 + 2 * 1.0))
    ce = make_policy(LasAtConfig(reward_form="ce", reward_mode="batch"), _context())  # paper's −CE
    torch.testing.assert_close(ce.reward(terms), torch.tensor(10.0 - 4 * 2.5 - 2 * 0.2))
    per = make_policy(LasAtConfig(reward_form="ce", reward_mode="per_sample"), _context())
    # a·R2 of the second sample, −18, is clamped to −10 (the reference's clamp of R2, R3)
    torch.testing.assert_close(per.reward(terms), torch.tensor([10.0 - 2.0 - 0.2,
                                                                2.0 - 10.0 - 0.6]))
    with pytest.raises(ValueError, match="reward_form"):
        make_policy(LasAtConfig(reward_form="loss"), _context())
    assert config_problems(LasAtConfig(true_class_prob=0.0), "policy") == [  # checked once
        "policy.true_class_prob=0 is out of range: accepted (0, 1]"]


@pytest.mark.parametrize("reward_attack", ["eval", "reference"])
def test_r1_is_plain_ce_of_the_examples_and_r2_r3_come_from_the_lookahead(tiny_net, batch,
                                                                          reward_attack):
    x, y = batch
    policy = make_policy(LasAtConfig(interval=1, reward_attack=reward_attack, reward_pgd_steps=3,
                                     true_class_prob=0.7), _context())
    target = target_for(tiny_net, _smoothed_ce(policy))
    result, _ = attack(policy, tiny_net, x, y)
    out = target.step(result, policy.target_inputs(result))
    metrics = policy.update(result, target.view(), out,
                            StepInfo(step=0, epoch=0, generator=torch.Generator().manual_seed(1)))
    plain_ce = torch.nn.functional.cross_entropy(out.logits_adv, y)
    torch.testing.assert_close(metrics["policy/reward_r1"], plain_ce.clamp(0, 10))
    assert not torch.allclose(out.per_sample.mean(), plain_ce)  # the step's loss is smoothed
    with torch.no_grad():
        clean_acc = (out.lookahead(x).argmax(1) == y).float().mean()
    torch.testing.assert_close(metrics["policy/reward_r3"], clean_acc)
    assert 0 <= metrics["policy/reward_r2"] <= 1


def test_default_digits_preset_learns_a_strategy_its_reward_favours():
    """One default digits run's worth of policy updates (330 batches / interval 4) on a reward
    shaped like the measured one (R1 rises by ≈ 1.3 over the ε grid, per-sample noise of the
    size of R1's spread, R2/R3 Bernoulli): the preset's learner moves ε measurably up."""
    policy = make_policy(LasAtConfig(), _context())
    assert policy.interval == 4
    updates = 30 * 11 // policy.interval
    gen = torch.Generator().manual_seed(0)
    eps = torch.tensor(policy.space.eps)
    lo, hi = eps.min(), eps.max()
    images = torch.rand(4, 64, 1, 8, 8, generator=gen)
    from learned_at.agents.strategy.lookahead import RewardTerms

    for u in range(updates):
        action = policy.act({"x": images[u % 4]}, 0, gen)
        r1 = 1.0 + 1.3 * (action.eps - lo) / (hi - lo) + torch.randn(64, generator=gen)
        r2 = (torch.rand(64, generator=gen) < 0.55).float()
        r3 = (torch.rand(64, generator=gen) < 0.95).float()
        terms = RewardTerms(r1=r1, r2=r2, r3=r3, ce_robust=r2, ce_clean=r3)
        policy.reinforce(policy._log_prob, policy.reward(terms))
        policy.batches += policy.interval
    with torch.no_grad():
        policy.net.eval()
        probs = torch.softmax(policy.net(images[0])[0], 1).mean(0)
    entropy = -(probs * probs.log()).sum()
    # measured (lr 0.02): mean ε 0.221 (uniform 0.2), entropy 2.140 (uniform 2.197); the
    # reference's learner (one batch scalar, no baseline, lr 0.05) stays at 0.199 / 2.17
    assert (probs * eps).sum() > 0.21 and entropy < math.log(len(eps)) - 0.04, (probs, entropy)


@pytest.mark.slow
def test_default_run_learns_a_directed_strategy_and_keeps_its_accuracy(tmp_path, tracking_uri,
                                                                        one_thread):
    """``python -m runners.cotrain`` (digits, LAS-AT, 30 epochs; about a minute unloaded):
    measured 98.06 clean / 64.17 PGD-20, mean ε 0.200 → 0.230, entropy 5.752 → 5.509."""
    run_id = cotrain(["progress=false", f"checkpoint_dir={tmp_path}/ck"], tracking_uri)
    client = MlflowClient(tracking_uri)
    m = client.get_run(run_id).data.metrics
    assert m["eval/clean_acc"] >= 0.975 and m["eval/pgd20_acc"] >= 0.63, m
    eps = [h.value for h in sorted(client.get_metric_history(run_id, "policy/eps_mean"),
                                   key=lambda h: h.step)]
    entropy = [h.value for h in sorted(client.get_metric_history(run_id, "policy/entropy"),
                                       key=lambda h: h.step)]
    assert len(eps) == 30 and abs(eps[0] - 0.2) < 0.005 and eps[-1] > 0.21, eps
    assert entropy[-1] < entropy[0] - 0.1, entropy


def test_moving_average_baseline_is_an_ema_of_the_batch_mean_reward(one_thread):
    """``baseline=moving_average`` (docs/references.md §1.11.12): the first batch's baseline is
    its own mean reward, then b ← m·b + (1 − m)·mean(r) with m = 0.9, and the REINFORCE loss
    is −mean_i(log π(a_i | x_i)·(r_i − b)) with the baseline held *before* this batch's update."""
    policy = make_policy(LasAtConfig(interval=1, reward_mode="per_sample",
                                     baseline="moving_average", lr=1e-3), _context())
    assert policy.config.baseline_momentum == 0.9 and not policy.baseline_ready
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=gen)
    rewards = [torch.tensor([1.0, 3.0, 0.0, 4.0]),  # mean 2
               torch.tensor([5.0, 7.0, 6.0, 2.0]),  # mean 5
               torch.tensor([0.0, 0.0, 1.0, 1.0])]  # mean 0.5
    used = [2.0, 2.0, 0.9 * 2.0 + 0.1 * 5.0]  # the baseline each batch subtracts: 2, 2, 2.3
    after = [2.0, 2.3, 0.9 * 2.3 + 0.1 * 0.5]  # the baseline after each update: 2, 2.3, 2.12
    for reward, base, new in zip(rewards, used, after):
        policy.act({"x": x}, 0, gen)
        log_prob = policy._log_prob
        metrics = policy.reinforce(log_prob, reward)
        expected = -(log_prob.detach() * (reward - base)).mean()
        torch.testing.assert_close(metrics["policy/loss"], expected)
        torch.testing.assert_close(policy.baseline_value, torch.tensor(new))
        assert bool(policy.baseline_ready)
        policy.batches += 1


def test_policy_learns_only_on_every_interval_th_batch(tiny_net, batch, one_thread):
    """Interval k = 3 (the reference's ``interval_num``, docs/references.md §1.6): batches 0 and
    3 (batches % k == 0) sample in train mode, ask for the look-ahead ŵ and take one REINFORCE
    step; batches 1, 2 and 4 sample in eval mode and leave the strategy network unchanged."""
    x, y = batch
    policy = make_policy(LasAtConfig(interval=3, reward_pgd_steps=1, reward_pgd_restarts=1),
                         _context())
    target = target_for(tiny_net)
    pattern = []
    for b in range(5):
        before = [p.detach().clone() for p in policy.net.parameters()]
        result, _ = attack(policy, tiny_net, x, y, seed=b)
        inputs = policy.target_inputs(result)
        learning = policy.net.training
        assert inputs.lookahead == learning == (policy._log_prob is not None)
        out = target.step(result, inputs)
        metrics = policy.update(result, target.view(), out,
                                StepInfo(step=b, epoch=0,
                                         generator=torch.Generator().manual_seed(b)))
        moved = any(not torch.equal(a, p) for a, p in zip(before, policy.net.parameters()))
        assert bool(metrics) == moved == learning, b
        pattern.append(learning)
    assert pattern == [True, False, False, True, False] and policy.batches == 5
