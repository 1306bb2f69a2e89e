"""Gradient-masking checks: the rules on hand-made numbers, a masked model fails, a plain one passes."""

from __future__ import annotations

import io

import pytest
import torch

from learned_at.envs.geometry import make_geometry
from learned_at.runners.robustness import evaluate
from learned_at.runners.masking_checks import (CheckConfig, check_autoattack_le_pgd,
                                               check_blackbox_ge_whitebox, check_eps_monotone,
                                               check_large_eps, check_stronger_not_better,
                                               default_large_eps, noise_margin, report_checks,
                                               run_masking_checks)
from tests.runners.conftest import QuantisedInput

pytestmark = pytest.mark.usefixtures("one_thread")


def test_noise_margin():
    assert noise_margin(0.5, 100) == pytest.approx(2 * 0.05 + 0.01)
    assert noise_margin(0.0, 100) == pytest.approx(0.01)


def test_rules_on_hand_made_numbers():
    n = 1000  # margin at p=0.5: 0.0326
    assert check_eps_monotone([(0, 0.9), (0.1, 0.5), (0.3, 0.2)], n).status == "pass"
    assert check_eps_monotone([(0.3, 0.52), (0, 0.9), (0.1, 0.5)], n).status == "pass"  # noise
    bad = check_eps_monotone([(0, 0.9), (0.1, 0.4), (0.3, 0.6)], n)
    assert bad.failed and "0.4000" in bad.detail and bad.numbers["acc_eps_0.3"] == 0.6
    assert check_large_eps(0.05, 0.5, 0.1).status == "pass"
    assert check_large_eps(0.3, 0.5, 0.1).failed
    assert check_autoattack_le_pgd(0.40, "pgd20", 0.45, n).status == "pass"
    assert check_autoattack_le_pgd(0.55, "pgd20", 0.45, n).failed
    assert check_blackbox_ge_whitebox({"square1000": 0.5}, {"pgd20": 0.45, "cw20": 0.44},
                                      n).status == "pass"
    bb = check_blackbox_ge_whitebox({"transfer_pgd20": 0.1, "square": 0.3}, {"pgd20": 0.6}, n)
    assert bb.failed and bb.numbers == {"blackbox_acc": 0.1, "whitebox_acc": 0.6}
    assert check_stronger_not_better({"pgd20": 0.5, "pgd50x10": 0.48, "cw20": 0.47},
                                     n).status == "pass"
    worse = check_stronger_not_better({"pgd20": 0.5, "pgd50x10": 0.6}, n)
    assert worse.failed and "pgd50x10" in worse.detail
    assert check_stronger_not_better({"pgd20": 0.5, "cw50": 0.9}, n).status == "skip"


def test_default_large_eps():
    assert default_large_eps(make_geometry("linf"), (1, 28, 28)) == 0.5
    assert default_large_eps(make_geometry("l2"), (1, 8, 8)) == pytest.approx(4.0)


def _run(model, x, y, surrogate=None, square=0):
    threat, eps = make_geometry("linf"), 0.2
    attacks = ["clean", "pgd10", "pgd20x2"]
    res = evaluate(model, x, y, attacks, threat, eps, 64, torch.Generator().manual_seed(0))
    return run_masking_checks(model, x, y, threat, eps, res, batch_size=64, surrogate=surrogate,
                              config=CheckConfig(attack="pgd10", square_queries=square))


def test_masked_model_fails_and_plain_model_passes(digits_model, digits_tensors):
    _, _, x, y = digits_tensors
    x, y = x[:64], y[:64]
    plain = {c.name: c for c in _run(digits_model, x, y, surrogate=digits_model)}
    assert all(c.status == "pass" for c in plain.values()
               if c.name != "autoattack_le_pgd"), plain
    assert plain["autoattack_le_pgd"].status == "skip"  # no autoattack in the list
    masked = QuantisedInput(digits_model).eval()
    checks = {c.name: c for c in _run(masked, x, y, surrogate=digits_model)}
    assert checks["blackbox_ge_whitebox"].failed, checks  # transfer beats the stuck white-box
    assert checks["large_eps"].failed, checks  # PGD cannot even move at eps = 0.5
    out = io.StringIO()
    report_checks(list(checks.values()), stream=out)
    assert "GRADIENT-MASKING CHECK FAILED: blackbox_ge_whitebox" in out.getvalue()


def test_square_is_the_black_box_without_surrogate(digits_model, digits_tensors):
    pytest.importorskip("pyautoattack")
    _, _, x, y = digits_tensors
    masked = QuantisedInput(digits_model).eval()
    checks = {c.name: c for c in _run(masked, x[:32], y[:32], square=100)}
    bb = checks["blackbox_ge_whitebox"]
    assert "square100" in bb.detail and bb.failed, bb
