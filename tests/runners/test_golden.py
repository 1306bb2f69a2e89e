"""Every policy's final metrics at seed 0, recorded before the runners redesign (one thread,
CPU, the AVX2 kernels tests/conftest.py selects, torch 2.13): the computation did not change,
so neither do they, to the last bit.

The record (tests/runners/data/golden.json) holds, per case, the overrides of a 2-epoch run
on the embedded digits and every metric of its final step (times and system metrics aside).
Regenerate it only for an intended change, and say so where the change is described:
``GOLDEN_RECORD=1 pytest tests/runners/test_golden.py``. Intended changes so far: ``policy=fgsm_pgi``
selects its regulariser ``at_loss=pgi`` by default (its record is the former ``fgsm_pgi_loss``
one; ``fgsm_pgi_ce``, the prior alone, keeps the former ``fgsm_pgi`` numbers).
"""

import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from learned_at.runners.cotrain import cotrain

RECORD = Path(__file__).parent / "data" / "golden.json"
TINY = ["epochs=2", "batch_size=128", "eval.test_subset=64", "eval.final_pgd_steps=3",
        "progress=false", "tracking.log_model=false", "tracking.system_metrics=false",
        "tracking.plot_every=0"]
CASES = json.loads(RECORD.read_text())


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", sorted(CASES))
def test_final_metrics_equal_the_record(name, tmp_path, tracking_uri):
    case = CASES[name]
    run_id = cotrain([*TINY, *case["overrides"], f"checkpoint_dir={tmp_path}/ck"], tracking_uri)
    run = MlflowClient(tracking_uri).get_run(run_id)
    metrics = {k: v for k, v in run.data.metrics.items() if not k.startswith(("time/", "system/"))}
    if os.environ.get("GOLDEN_RECORD"):
        CASES[name]["metrics"] = dict(sorted(metrics.items()))
        RECORD.write_text(json.dumps(CASES, indent=1) + "\n")
    assert metrics == case["metrics"]  # exact: every metric, bit for bit
    assert "None" not in run.data.params.values()  # the resolved config is logged
