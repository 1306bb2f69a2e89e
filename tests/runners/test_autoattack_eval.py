"""AutoAttack from pyautoattack: standard version on the reported path, ≤ PGD, resumable state."""

from __future__ import annotations

import builtins
import json

import pytest
import torch

from learned_at.envs.geometry import make_geometry
from learned_at.envs.attacks import autoattack as autoattack_eval
from learned_at.envs.attacks.autoattack import (AUTOATTACK_VERSION, STANDARD_ATTACKS,
                                                make_autoattack, run_autoattack)
from learned_at.runners.robustness import evaluate

pytest.importorskip("pyautoattack")
pytestmark = pytest.mark.usefixtures("one_thread")


def fast_autoattack(model, threat, eps, seed, device):
    """The standard adversary with fewer iterations/targets/queries: for test speed only."""
    aa = make_autoattack(model, threat, eps, seed, device)
    for apgd in (aa.apgd, aa.apgd_targeted):
        apgd.n_iter = apgd.n_iter_orig = 5
        apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = 1, 1, 1
    aa.apgd_targeted.n_target_classes = 2
    aa.fab.n_iter, aa.fab.n_target_classes = 5, 2
    aa.square.n_queries = 20
    return aa


def test_reported_path_is_the_standard_version(digits_model):
    aa = make_autoattack(digits_model, make_geometry("linf"), 0.1, 0, torch.device("cpu"))
    assert AUTOATTACK_VERSION == "standard" and aa.version == "standard"
    assert tuple(aa.attacks_to_run) == STANDARD_ATTACKS == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert aa.apgd.n_iter == 100 and aa.apgd_targeted.n_iter == 100 and aa.fab.n_iter == 100
    assert aa.apgd_targeted.n_target_classes == 9 and aa.fab.n_target_classes == 9
    assert aa.square.n_queries == 5000 and aa.norm == "Linf" and aa.epsilon == 0.1
    assert make_autoattack(digits_model, make_geometry("l2"), 0.5, 0, "cpu").norm == "L2"


def test_evaluate_builds_autoattack_with_the_standard_factory(digits_model, digits_tensors,
                                                              monkeypatch):
    """``evaluate(..., ["autoattack"])`` without ``make_adversary`` (the reported path) builds
    its adversary with :func:`make_autoattack` (here a spy that shortens the run)."""
    _, _, x, y = digits_tensors
    calls = []

    def spy(model, threat, eps, seed, device):
        calls.append((threat.name, eps, seed))
        aa = fast_autoattack(model, threat, eps, seed, device)
        assert aa.version == "standard"
        return aa

    monkeypatch.setattr(autoattack_eval, "make_autoattack", spy)
    res = evaluate(digits_model, x[:16], y[:16], ["autoattack"], make_geometry("linf"), 0.05,
                   16, seed=3)
    assert calls and all(c == ("linf", 0.05, 3) for c in calls)
    assert 0.0 <= res["autoattack"]["acc"] <= 1.0


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.3)])
def test_autoattack_not_weaker_than_pgd(digits_model, digits_tensors, norm, eps):
    _, _, x, y = digits_tensors
    x, y = x[:48], y[:48]
    masks: dict[str, torch.Tensor] = {}
    res = evaluate(digits_model, x, y, ["clean", "pgd10", "autoattack"], make_geometry(norm), eps,
                   48, torch.Generator().manual_seed(0), make_adversary=fast_autoattack,
                   masks=masks)
    assert res["clean"]["acc"] > 0.9
    assert 0.0 < res["autoattack"]["acc"] <= res["pgd10"]["acc"] < res["clean"]["acc"]
    # AutoAttack's stages are cumulative (each attack runs on the still-robust points)
    stages = [res[f"autoattack.{a}"]["acc"] for a in STANDARD_ATTACKS]
    assert stages == sorted(stages, reverse=True) and stages[-1] == res["autoattack"]["acc"]
    assert torch.all(masks["autoattack"] <= masks["clean"])  # never robust when misclassified
    assert res["worst_case"]["acc"] <= res["autoattack"]["acc"]


def test_state_resumes_after_an_interruption(digits_model, digits_tensors, tmp_path):
    _, _, x, y = digits_tensors
    x, y, threat = x[:40], y[:40], make_geometry("linf")
    full = run_autoattack(digits_model, x, y, threat, 0.05, batch_size=16,
                          make_adversary=fast_autoattack)
    path = tmp_path / "aa_state.json"
    calls = {"n": 0}

    def interrupting(model, threat, eps, seed, device):
        aa = fast_autoattack(model, threat, eps, seed, device)
        run = aa.run_standard_evaluation

        def counted(*a, **k):
            calls["n"] += 1
            if calls["n"] == 4:  # apgd-ce takes 3 chunks of 16; die in apgd-t
                raise KeyboardInterrupt
            return run(*a, **k)
        aa.run_standard_evaluation = counted
        return aa

    with pytest.raises(KeyboardInterrupt):
        run_autoattack(digits_model, x, y, threat, 0.05, batch_size=16, state_path=path,
                       make_adversary=interrupting)
    state = json.loads(path.read_text())
    assert state["done"] == ["apgd-ce"] and state["current"] == "apgd-t"
    resumed = run_autoattack(digits_model, x, y, threat, 0.05, batch_size=16, state_path=path,
                             make_adversary=fast_autoattack)
    assert resumed.resumed_from == ["apgd-ce"] and not path.exists()
    assert torch.equal(resumed.robust, full.robust)
    # a state of another setting is ignored, not trusted
    path.write_text(json.dumps({**state, "fingerprint": "other"}))
    again = run_autoattack(digits_model, x, y, threat, 0.05, batch_size=16, state_path=path,
                           make_adversary=fast_autoattack)
    assert again.resumed_from == [] and torch.equal(again.robust, full.robust)


def test_out_of_ball_examples_are_refused(digits_model, digits_tensors):
    _, _, x, y = digits_tensors

    class Cheat:
        version, attacks_to_run = "standard", ["apgd-ce"]

        def run_standard_evaluation(self, xb, yb, batch_size):
            return (1 - xb), yb  # far outside any small ball

    with pytest.raises(RuntimeError, match="outside"):
        run_autoattack(digits_model, x[:8], y[:8], make_geometry("linf"), 0.05,
                       make_adversary=lambda *a: Cheat())


def test_missing_package_names_the_install_command(monkeypatch):
    real_import = builtins.__import__

    def no_pyautoattack(name, *a, **k):
        if name == "pyautoattack":
            raise ImportError("No module named 'pyautoattack'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pyautoattack)
    with pytest.raises(ImportError, match=r"pip install pyautoattack==0\.2\.0"):
        autoattack_eval.import_pyautoattack()


def test_gradient_stages_alone_are_the_standard_settings_and_an_upper_bound(
        digits_model, digits_tensors):
    """``autoattack_apgd``: APGD-CE then APGD-T with the standard version's settings (100
    iterations, one restart, 9 targets); its robust points include the full AutoAttack's
    (it runs the same first two stages and nothing after them)."""
    from learned_at.envs.attacks.autoattack_apgd import GRADIENT_STAGES, make_autoattack_apgd

    aa = make_autoattack_apgd(digits_model, make_geometry("linf"), 0.1, 0, torch.device("cpu"))
    assert list(aa.attacks_to_run) == GRADIENT_STAGES == ["apgd-ce", "apgd-t"]
    assert aa.apgd.n_iter == 100 and aa.apgd.n_restarts == 1
    assert aa.apgd_targeted.n_restarts == 1 and aa.apgd_targeted.n_target_classes == 9

    def fast_apgd(model, threat, eps, seed, device):
        fast = fast_autoattack(model, threat, eps, seed, device)
        fast.attacks_to_run = list(GRADIENT_STAGES)
        return fast

    _, _, x, y = digits_tensors
    masks: dict[str, torch.Tensor] = {}
    evaluate(digits_model, x[:48], y[:48], ["autoattack_apgd"], make_geometry("linf"), 0.05, 48,
             seed=1, make_adversary=fast_apgd, masks=masks)
    full: dict[str, torch.Tensor] = {}
    res = evaluate(digits_model, x[:48], y[:48], ["autoattack"], make_geometry("linf"), 0.05,
                   48, seed=1, make_adversary=fast_autoattack, masks=full)
    assert torch.all(full["autoattack"] <= masks["autoattack_apgd"])
    assert {k for k in res if k.startswith("autoattack.")} >= {"autoattack.apgd-ce"}
