"""runners.compare: the expected table from a temporary MLflow store (by ids, experiment, filter)."""

from __future__ import annotations

from mlflow import MlflowClient

from learned_at.runners.compare import main
from learned_at.runners.tracking import Tracker
from tests.helpers import run_command


def _make_run(uri, name, policy, at_loss, evals, epoch_times, checks=None, params=None,
              experiment="ablation"):
    with Tracker(experiment, run_name=name, tracking_uri=uri,
                 tags={"policy": policy, "at_loss": at_loss}) as t:
        if params:
            t.log_params(params)
        for step, s in enumerate(epoch_times):
            t.log_metrics({"time/epoch_s": s}, step=step)
        t.log_metrics({f"eval/{k}_acc": v for k, v in evals.items()}, step=len(epoch_times))
        t.log_metrics({f"check/{k}": v for k, v in (checks or {}).items()}, step=0)
    return t.run_id


def test_compare_writes_the_expected_table(tracking_uri, capsys):
    a = _make_run(tracking_uri, "pgd", "pgd_at", "ce",
                  {"clean": 0.9812, "pgd20": 0.92, "pgd50x10": 0.905, "autoattack": 0.8875,
                   "worst_case": 0.885}, [10.0, 12.0, 11.0],
                  {"eps_monotone": 1.0, "large_eps": 1.0, "autoattack_le_pgd": 1.0})
    b = _make_run(tracking_uri, "fgsm", "fgsm_rs", "ce",
                  {"clean": 0.99, "pgd20": 0.5, "pgd50x10": 0.45}, [4.0, 6.0],
                  {"eps_monotone": 1.0, "large_eps": 0.0})
    c = _make_run(tracking_uri, "trades", "pgd_at", "trades", {"clean": 0.97}, [20.0])
    assert run_command(main, [f"run_ids=[{a},{b},{c}]", f"tracking_uri={tracking_uri}"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5  # a table only: logging is opt-in
    assert run_command(main, [f"run_ids=[{a},{b},{c}]", "log=true", f"tracking_uri={tracking_uri}"]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = [
        "| run | policy | AT loss | seed | clean % | PGD (pgd50x10) % | AutoAttack % "
        "| worst case % | masking checks | s / epoch | train s (epochs) |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
        f"| pgd ({a[:8]}) | pgd_at | ce | – | 98.12 | 90.50 | 88.75 | 88.50 | 3/3 | 11.0 "
        "| 33.0 (3) |",
        f"| fgsm ({b[:8]}) | fgsm_rs | ce | – | 99.00 | 45.00 | – | – | 1/2 FAIL: large_eps "
        "| 5.0 | 10.0 (2) |",
        f"| trades ({c[:8]}) | pgd_at | trades | – | 97.00 | – | – | – | – | 20.0 | 20.0 (1) |",
    ]
    assert out[:5] == expected
    # the table is also an artifact of a comparison run, which later comparisons skip
    comparison_id = out[5].split("=")[1]
    client = MlflowClient(tracking_uri)
    text = client.download_artifacts(comparison_id, "compare/table.md")
    assert open(text).read().splitlines() == expected
    assert client.get_run(comparison_id).data.tags["kind"] == "comparison"
    assert run_command(main, ["experiment=ablation", "pgd=pgd20", "log=false",
                 f"tracking_uri={tracking_uri}"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 5 and "PGD (pgd20) %" in rows[0]
    assert rows[2].startswith("| pgd (") and "| 92.00 |" in rows[2]
    assert run_command(main, ["filter=\"tags.at_loss = 'trades'\"", "log=false",
                 f"tracking_uri={tracking_uri}"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 3 and "| trades |" in rows[2] and "PGD (–)" in rows[0]


def test_seeds_are_aggregated_and_two_methods_paired(tracking_uri, capsys):
    las = {"0": (0.90, 0.50), "1": (0.92, 0.54), "2": (0.91, 0.55)}
    pgd = {"0": (0.93, 0.49), "1": (0.94, 0.50), "2": (0.92, 0.52)}
    for policy, table in (("las_at", las), ("pgd_at", pgd)):
        for seed, (clean, rob) in table.items():
            _make_run(tracking_uri, f"{policy}-{seed}", policy, "ce",
                      {"clean": clean, "pgd20": rob}, [2.0 + int(seed)],
                      params={"seed": seed, "policy.name": policy, "epochs": "30",
                              "checkpoint_dir": f"ck{seed}"}, experiment="seeds")
    # a setting that differs in another field only (epochs) is a group of its own
    _make_run(tracking_uri, "pgd-short", "pgd_at", "ce", {"clean": 0.5, "pgd20": 0.1}, [1.0],
              params={"seed": "0", "policy.name": "pgd_at", "epochs": "2"}, experiment="seeds")
    common = ["experiment=seeds", "log=false", f"tracking_uri={tracking_uri}"]
    assert run_command(main, [*common, "paired=[las_at,'pgd_at&epochs=30']"]) == 0
    out = capsys.readouterr().out.split("\n\n")
    assert len(out[0].splitlines()) == 2 + 7  # one line per run
    groups = out[1].splitlines()
    assert groups[0] == ("| group | n | seeds | clean % | PGD (pgd20) % | AutoAttack % "
                         "| worst case % | s / epoch |")
    assert groups[2:] == [
        "| epochs=30, policy.name=las_at | 3 | 0,1,2 | 91.00 ± 1.00 | 53.00 ± 2.65 | – | – "
        "| 3.0 ± 1.0 |",
        "| epochs=30, policy.name=pgd_at | 3 | 0,1,2 | 93.00 ± 1.00 | 50.33 ± 1.53 | – | – "
        "| 3.0 ± 1.0 |",
        "| epochs=2, policy.name=pgd_at | 1 | 0 | 50.00 | 10.00 | – | – | 1.0 |"]
    paired = out[2].splitlines()
    # per-seed differences: clean −3, −2, −1 pp; PGD +1, +4, +3 pp; t(0.975, 2) = 4.303
    assert paired[2] == ("| epochs=30, policy.name=las_at − epochs=30, policy.name=pgd_at | 3 "
                         "| -2.00 ± 1.00 [±2.48] | +2.67 ± 1.53 [±3.79] | – | – "
                         "| +0.0 ± 0.0 [±0.0] |")
    # group_by= merges the two pgd_at settings; a token naming two groups is refused
    assert run_command(main, [*common, "group_by=[policy.name]"]) == 0
    groups = capsys.readouterr().out.split("\n\n")[1].splitlines()
    assert groups[2].startswith("| policy.name=las_at | 3 | 0,1,2 |")
    assert groups[3].startswith("| policy.name=pgd_at | 4 | 0,1,2,0 | 82.25 ± 21.52 |")
    assert run_command(main, [*common, "paired=[las_at,pgd_at]"]) == 2
    assert "2 groups match 'pgd_at'" in capsys.readouterr().err
