"""Every CLI: --help, --cfg job, console scripts, and one clear line (status 2) on bad input."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from learned_at.runners import compare, cotrain, evaluate, inspect
from tests.helpers import run_command

ROOT = Path(__file__).resolve().parents[2]
CLIS = {"cotrain": cotrain.main, "evaluate": evaluate.main, "inspect": inspect.main,
        "compare": compare.main}
UNKNOWN = "0123456789abcdef0123456789abcdef"

BAD_INPUTS = [  # (cli, argv, words the one line must hold)
    ("cotrain", ["policy=nope"], ["unknown option 'nope' for 'policy'", "pgd_at"]),
    ("cotrain", ["epochz=3"], ["unknown config key 'epochz'", "epochs"]),
    ("cotrain", ["policy=pgd_at", "threat.eps=-1"], ["threat.eps=-1", "accepted [0, 1]"]),
    ("cotrain", ["threat.eps=5"], ["threat.eps=5", "accepted [0, 1]"]),
    ("cotrain", ["threat=l2", "threat.eps=100"], ["threat.eps=100", "accepted [0, 8]"]),
    ("cotrain", ["batch_size=0"], ["batch_size=0", "accepted integers in [1, inf)"]),
    ("cotrain", ["data.train_subset=-3"], ["data.train_subset=-3", "[0, inf)"]),
    ("cotrain", ["data.train_subset=100"], ["data.train_subset=100", "batch_size=128"]),
    ("cotrain", ["epochs=abc"], ["epochs=abc", "expected an integer"]),
    ("cotrain", ["optim.schedule=bogus"], ["optim.schedule=bogus", "piecewise, cyclic"]),
    ("cotrain", ["policy.reward_mode=bogus"], ["policy.reward_mode=bogus", "batch, per_sample"]),
    ("cotrain", ["optim.lr=nan"], ["optim.lr=nan", "(0, inf)"]),
    ("cotrain", ["policy=curriculum", "policy.k_min=5", "policy.k_max=2"], ["k_min <= k_max"]),
    ("cotrain", ["device=gpu"], ["device='gpu'", "cuda"]),
    ("cotrain", ["recipe=nope"], ["unknown option 'nope' for 'recipe'", "fast_bat_cifar10"]),
    ("cotrain", ["--bogus"], ["unknown option '--bogus'", "--help"]),
    ("cotrain", ["optim.schedule=bogus"], ["optim.schedule=bogus", "piecewise, cyclic"]),
    ("cotrain", ["policy=pgd_at", "policy.stepz=1"], ["unknown config key 'policy.stepz'",
                                                      "alpha_ratio, name, random_start, steps"]),
    ("cotrain", ["data=mnist", "data.root=/nonexistent"], ["t10k-images-idx3-ubyte",
                                                           "data.download=true"]),
    ("cotrain", [f"resume={UNKNOWN}"], [f"no MLflow run '{UNKNOWN}'"]),
    ("cotrain", ["-m", "policy=pgd_at,nope"], ["unknown option 'nope' for 'policy'"]),
    ("cotrain", ["-m", "epochz=1,2"], ["unknown config key 'epochz'"]),
    ("cotrain", ["-m", "seed=0,1", "threat.eps=0.1,-1"], ["threat.eps=-1"]),
    ("cotrain", ["-m", "--cfg", "job", "batch_size=0,1"], ["--cfg job shows one config"]),
    ("cotrain", ["-m", "seed=range(0"], ["cannot read the override(s)"]),
    ("evaluate", [], ["run_id=<mlflow run id> is required"]),
    ("evaluate", ["bogus=1"], ["unknown config key 'bogus'", "attacks"]),
    ("evaluate", [f"run_id={UNKNOWN}"], [f"no MLflow run '{UNKNOWN}'"]),
    ("evaluate", [f"run_id={UNKNOWN}", "n_examples=many"], ["n_examples=many", "integer"]),
    ("evaluate", [f"run_id={UNKNOWN}", "batch_size=0"], ["batch_size=0"]),
    ("inspect", [], ["run_id=<id> is required"]),
    ("inspect", ["bogus=1"], ["unknown config key 'bogus'", "run_id"]),
    ("inspect", [f"run_id={UNKNOWN}"], [f"no MLflow run '{UNKNOWN}'"]),
    ("compare", [], ["give run_ids=[...]"]),
    ("compare", ["bogus=1"], ["unknown config key 'bogus'", "run_ids"]),
    ("compare", [f"run_ids=[{UNKNOWN}]"], [f"no MLflow run '{UNKNOWN}'"]),
    ("compare", ["experiment=nope"], ["no experiment named 'nope'"]),
    ("compare", ["filter='this is not a filter'"], ["filter='this is not a filter'"]),
    ("compare", ["filter=tags.data = 'x'"], ["cannot read the override(s)"]),
    ("compare", ["log=maybe", "experiment=x"], ["log=maybe", "true or false"]),
]


@pytest.mark.parametrize("cli,argv,words", BAD_INPUTS,
                         ids=[f"{c}:{' '.join(a)}" for c, a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_status_2(cli, argv, words, tracking_uri, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setattr(sys, "argv", [cli])
    assert run_command(CLIS[cli], argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"runners.{cli}: ") and "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "run_id=" not in out  # nothing ran


def test_bad_input_through_the_interpreter_has_no_traceback(tmp_path):
    """The same through ``python -m`` (Hydra's multirun path included)."""
    env = {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    proc = subprocess.run([sys.executable, "-m", "learned_at.runners.cotrain", "-m", "seed=0,1",
                           "policy.stepz=3"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "runners.cotrain: unknown config key 'policy.stepz'; valid keys in 'policy': "
        + proc.stderr.split("valid keys in 'policy': ")[1].strip()]


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_help_lists_fields_with_defaults_and_an_example(cli, capsys):
    assert run_command(CLIS[cli], ["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m runners.") and "\nexample:\n  python -m" in text
    expected = {"cotrain": ["config groups", "policy ", "*las_at", "batch_size=128",
                            "policy.reward_pgd_steps=10", "threat.eps=null",
                            "tracking.system_metrics=true", "checkpoint_every_s=600", "--cfg job"],
                "evaluate": ["run_id=", "n_examples=0", "batch_size=500", "checks=false",
                             "the first n test samples"],
                "inspect": ["run_id=", "key=", "tracking_uri="],
                "compare": ["run_ids=[]", "pgd=auto", "log=false"]}[cli]
    for word in expected:
        assert word in text, word


def test_help_shows_the_fields_of_the_chosen_option(capsys):
    assert run_command(cotrain.main, ["policy=pgd_at", "--help"]) == 0
    text = capsys.readouterr().out
    assert "policy (policy=pgd_at):" in text and "policy.steps=10" in text
    assert "reward_pgd_steps" not in text
    # each field with its meaning, from the config dataclasses' field metadata
    assert "iterations K per sample" in text.split("policy.steps=10", 1)[1].splitlines()[0]
    assert "las_pgd_at_cifar10: LAS-PGD-AT" in text  # the recipes, each with its line


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_cfg_job_prints_the_composed_config(cli, capsys):
    argv = {"cotrain": ["policy=pgd_at", "policy.steps=3"], "evaluate": ["n_examples=7"],
            "inspect": ["key=eps"], "compare": ["pgd=pgd20"]}[cli]
    assert run_command(CLIS[cli], [*argv, "--cfg", "job"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    key, value = argv[-1].split("=")
    node = cfg
    for part in key.split(".")[:-1]:
        node = node[part]
    assert str(node[key.split(".")[-1]]) == value
    if cli == "cotrain":
        assert cfg["policy"] == {"name": "pgd_at", "steps": 3, "alpha_ratio": 0.25,
                                 "random_start": True}
        assert cfg["batch_size"] == 128


def test_console_scripts_point_at_the_clis(capsys):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"lat-cotrain", "lat-evaluate", "lat-inspect", "lat-compare"}
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert run_command(getattr(importlib.import_module(module), function), ["--help"]) == 0
        assert f"console script: {name}" in capsys.readouterr().out


@pytest.mark.usefixtures("one_thread")
def test_sweep_keeps_hydra_job_lines_and_tags_its_runs(tmp_path, tracking_uri, monkeypatch,
                                                       capsys):
    from tests.runners.conftest import TINY_RUN

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    args = [a for a in TINY_RUN if a != "epochs=2"]
    assert run_command(cotrain.main, ["-m", "seed=0,1", "epochs=1", "policy=pgd_at",
                                      "policy.steps=1", f"checkpoint_dir={tmp_path}/ck",
                                      *args]) == 0
    out = capsys.readouterr().out.splitlines()
    jobs = [i for i, line in enumerate(out) if "[HYDRA] \t#" in line]
    ids = [i for i, line in enumerate(out) if line.startswith("run_id=")]
    assert len(jobs) == 2 and len(ids) == 2
    assert "#0 : seed=0" in out[jobs[0]] and jobs[0] < ids[0] < jobs[1] < ids[1]
    client = MlflowClient(tracking_uri)
    runs = [client.get_run(out[i].split("=", 1)[1]) for i in ids]
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert [r.info.run_name.endswith(f"seed={s}") for s, r in enumerate(runs)] == [True, True]
