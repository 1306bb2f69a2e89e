"""benchmarks.fidelity: verdicts at the tier's resolution, the test-sampling error, resuming
from --out, and one real run of the smoke tier."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import fidelity
from benchmarks.fidelity_claims import (Effect, co_rows, collapsed, decide, seeds_needed,
                                        paired_sampling_se)

pytestmark = pytest.mark.usefixtures("one_thread")

AT_LEAST = Effect(">=", 0.0065, "paper")
ABOUT = Effect("≈", 0.01, "margin")


@pytest.mark.parametrize("mean,ci,effect,verdict", [
    (0.010, 0.005, AT_LEAST, "holds"),                       # [+0.5, +1.5] above 0
    (0.000, 0.004, AT_LEAST, "does not hold"),               # [−0.4, +0.4] excludes +0.65
    (-0.020, 0.005, AT_LEAST, "does not hold"),              # below 0 as well
    (0.003, 0.010, AT_LEAST, "below this tier's resolution"),  # contains 0 and +0.65
    (0.001, 0.004, ABOUT, "holds"),                          # inside ±1
    (0.020, 0.005, ABOUT, "does not hold"),                  # excludes 0
    (0.004, 0.010, ABOUT, "below this tier's resolution"),   # contains 0, leaves ±1
])
def test_verdicts_at_the_tiers_resolution(mean, ci, effect, verdict):
    assert decide(mean, ci, effect).startswith(verdict)


def test_test_sampling_error_and_seeds_needed_by_hand():
    # 10 images: a robust on 1..6, b on 3..8 -> n01 = 2 (7, 8), n10 = 2 (1, 2)
    a, b = "1111110000", "0011111100"
    assert math.isclose(paired_sampling_se(a, b), math.sqrt(4 - 0) / 10)
    assert paired_sampling_se(a, a) == 0
    # t(2)·s/√3 = 4.303·0.01/1.732 = 0.0248 > 0.02; t(3)·s/2 = 3.182·0.005 = 0.0159 < 0.02
    assert seeds_needed(0.01, 0.02) == 4
    assert seeds_needed(1.0, 1e-4) is None


def test_collapse_rule():
    curve = [[0.9, 0.6, 0.40], [0.95, 0.8, 0.35], [0.97, 0.9, 0.05]]
    assert collapsed({"per_epoch": curve})                       # 0.40 -> 0.05, FGSM high
    assert not collapsed({"per_epoch": curve[:2]})
    assert collapsed({"per_epoch": [[0.9, 0.95, 0.01]]})         # never PGD-robust


def test_a_rerun_skips_the_finished_runs(tmp_path, monkeypatch):
    calls = []

    def fake_run(method, setting, seed, preset, data_root, epochs=None):
        calls.append((method, setting, seed))
        return {"method": method, "setting": setting, "seed": seed, "clean": 0.9,
                "robust": 0.5 + 0.01 * seed, "attack_passes": 5.0, "cpu_s_per_epoch": 1.0,
                "wall_s": 60.0, "load": 1.0, "per_epoch": [], "co_epochs": [],
                "strategy": [], "robust_mask": "", "check": {}}

    monkeypatch.setattr(fidelity, "run_one", fake_run)
    out = tmp_path / "runs.json"
    argv = ["--quick", "--claims", "curriculum", "--seeds", "0,1", "--workers", "1",
            "--out", str(out)]
    assert fidelity.main(argv) == 0
    first = json.loads(out.read_text())
    assert {(r["method"], r["seed"]) for r in first["runs"]} == {
        ("curriculum", 0), ("curriculum", 1), ("pgd_at", 0), ("pgd_at", 1)}
    assert fidelity.main(argv) == 0  # everything is there: nothing runs again
    assert len(json.loads(out.read_text())["runs"]) == 4
    with pytest.raises(SystemExit, match="--quick"):
        fidelity.main(["--mnist", "--claims", "curriculum", "--out", str(out)])


def test_one_real_run_of_the_smoke_tier():
    r = fidelity.run_one("fgsm_rs", "co", 0, "quick", None, epochs=1)
    assert r["method"] == "fgsm_rs" and len(r["per_epoch"]) == 1
    assert 0 <= r["robust"] <= r["clean"] <= 1 and r["attack_passes"] == pytest.approx(1.0)


def test_a_run_that_did_not_train_does_not_count_as_avoiding_collapse():
    def run(seed, clean, curve):
        return {"seed": seed, "clean": clean, "robust": curve[-1][2], "per_epoch": curve,
                "co_epochs": [], "wall_s": 60.0}
    constant = [[0.126, 0.126, 0.126]] * 3                      # one class for every input
    trained = [[0.9, 0.6, 0.3], [0.95, 0.7, 0.4], [0.96, 0.7, 0.4]]
    runs = {("dead", "co"): [run(0, 0.126, constant), run(1, 0.95, trained)],
            ("alive", "co"): [run(0, 0.96, trained), run(1, 0.96, trained)]}
    rows = {r.claim.split()[0]: r for r in co_rows(runs, ["dead", "alive"], "co", "other",
                                                   "PGD")}
    assert rows["dead"].verdict == "does not hold (did not train in 1/2 seeds)"
    assert "did not train" in rows["dead"].measured
    assert rows["alive"].verdict == "holds"
