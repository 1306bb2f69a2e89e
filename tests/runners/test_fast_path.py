"""The fast path's switches (perf.*) and the hot loop's host syncs, on CPU.

bf16 autocast exists on CPU too, so the code path and the bf16-vs-fp32 attack comparison run
here; CUDA-only effects (speed, cuDNN's NHWC kernels, CUDA graphs) are benchmarks/gpu.py's.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
import torch

from learned_at.envs.geometry.linf import Linf
from learned_at.envs.pgd import pgd_attack
from learned_at.runners.compose import compose_config
from learned_at.runners.run import Run, build_run
from learned_at.runners.train import evaluate_epoch, train_step
from learned_at.runners.fast_path import CompileMode, PerfConfig

TINY = ["batch_size=64", "data.train_subset=128", "data.test_subset=64", "eval.test_subset=32",
        "epochs=1", "monitor.enabled=false", "progress=false", "device=cpu"]


def _trainer(*overrides: str) -> Run:
    return build_run(compose_config([*TINY, *overrides]))


def test_switches_are_off_by_default():
    assert compose_config([]).perf == PerfConfig()
    assert not any((PerfConfig().bf16, PerfConfig().channels_last, PerfConfig().compile,
                    PerfConfig().pin_memory))
    cfg = compose_config(["perf.bf16=true", "perf.compile_mode=reduce_overhead"]).perf
    assert cfg.bf16 and CompileMode(cfg.compile_mode).torch_name == "reduce-overhead"


def _first_conv_dtypes(trainer: Run) -> tuple[list[torch.dtype], torch.utils.hooks.RemovableHandle]:
    seen: list[torch.dtype] = []
    conv = next(m for m in trainer.target.model.modules() if isinstance(m, torch.nn.Conv2d))
    return seen, conv.register_forward_hook(lambda m, i, out: seen.append(out.dtype))


def test_bf16_runs_attack_and_at_step_in_bf16_and_evaluates_in_fp32(one_thread):
    # batch 16: CPUs without native bf16 run bf16 convolutions in slow reference kernels
    trainer = _trainer("policy=pgd_at", "policy.steps=2", "perf.bf16=true", "batch_size=16",
                       "eval.test_subset=16", "data.test_subset=16")
    seen, hook = _first_conv_dtypes(trainer)
    batch = next(iter(trainer.loader))
    stats, _ = train_step(trainer, batch, 0, 0)
    assert seen and set(seen) == {torch.bfloat16}  # 2 attack steps + the AT step
    assert len(seen) == 3
    assert all(torch.isfinite(v) for v in stats.values())
    assert all(p.dtype == torch.float32 for p in trainer.target.model.parameters())  # fp32 master weights
    seen.clear()
    evaluate_epoch(trainer)
    hook.remove()
    assert seen and set(seen) == {torch.float32}


def test_bf16_pgd_accuracy_matches_fp32_on_a_trained_model(digits_model, digits_tensors,
                                                           one_thread):
    """The attack's gradients in bf16 must still find the adversarial examples fp32 finds."""
    _, _, x, y = digits_tensors
    x, y = x[:300], y[:300]
    geometry = Linf()

    def robust_acc(bf16: bool) -> float:
        g = torch.Generator().manual_seed(0)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            x_adv = pgd_attack(digits_model, x, y, geometry=geometry, eps=0.1, alpha=0.025,
                               steps=10, generator=g)
        with torch.no_grad():  # judged in fp32 in both cases
            return (digits_model(x_adv).argmax(1) == y).float().mean().item()

    with torch.no_grad():
        clean = (digits_model(x).argmax(1) == y).float().mean().item()
    fp32, bf16 = robust_acc(False), robust_acc(True)
    assert clean > 0.9 and fp32 < clean - 0.3  # the attack works at all
    assert abs(bf16 - fp32) <= 0.03, (clean, fp32, bf16)


def test_channels_last_keeps_checkpoints_interchangeable(one_thread):
    trainer = _trainer("policy=fgsm_rs", "perf.channels_last=true")
    conv = next(m for m in trainer.target.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    train_step(trainer, next(iter(trainer.loader)), 0, 0)
    plain = _trainer("policy=fgsm_rs")
    plain.target.model.load_state_dict(trainer.target.model.state_dict())  # same keys, any layout


@pytest.mark.slow
def test_compiled_target_trains_like_the_eager_one(monkeypatch, one_thread):
    """perf.compile wiring (in place: same state-dict keys, same numbers); the aot_eager backend
    traces forward and backward like inductor does without generating C++ (fast on CPU)."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, **kw: compile_module(self, backend="aot_eager"))
    runs = {}
    for switch in ("false", "true"):
        trainer = _trainer("policy=pgd_at", "policy.steps=2", f"perf.compile={switch}")
        for b in trainer.loader:
            train_step(trainer, b, 0, 0)
        runs[switch] = trainer.target.model.state_dict()
    assert runs["true"].keys() == runs["false"].keys()
    for key, value in runs["false"].items():
        torch.testing.assert_close(runs["true"][key], value, rtol=1e-4, atol=1e-5)


SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def count_host_syncs(monkeypatch: pytest.MonkeyPatch):
    """Count Python-level calls that wait for the device (on CUDA they would sync)."""
    calls: Counter[str] = Counter()
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    original_nonzero = torch.nonzero
    monkeypatch.setattr(torch, "nonzero", lambda *a, **k: (calls.update(["torch.nonzero"]),
                                                          original_nonzero(*a, **k))[1])
    yield calls
    monkeypatch.undo()


@pytest.mark.parametrize("policy", ["policy=pgd_at", "policy=fgsm_rs"])
def test_one_host_sync_per_batch_for_uniform_budgets(policy, monkeypatch, one_thread):
    trainer = _trainer(policy)
    batches = list(trainer.loader)
    train_step(trainer, batches[0], 0, 0)  # warm-up (lazy allocations)
    with count_host_syncs(monkeypatch) as calls:
        stats, _ = train_step(trainer, batches[1], 0, 0)
    # the attack env reads its budgets' range once per episode; nothing else waits
    assert calls == Counter({"tolist": 1}), calls
    assert all(isinstance(v, torch.Tensor) for v in stats.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_syncs_once_with_every_switch_on():
    """What the CPU counter above approximates, measured by CUDA's own sync detector."""
    import warnings

    trainer = _trainer("policy=pgd_at", "device=cuda", "perf.bf16=true",
                       "perf.channels_last=true", "perf.pin_memory=true")
    batches = list(trainer.loader)
    train_step(trainer, batches[0], 0, 0)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_step(trainer, batches[1], 0, 0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # torch also warns once that the detector is a prototype: count the detections only
    syncs = [w for w in caught if "called a synchronizing CUDA operation" in str(w.message)]
    assert len(syncs) == 1, [str(w.message) for w in caught]
