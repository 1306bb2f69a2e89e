"""The GPU fast path behind switches (``perf.*``), all off by default.

* ``perf.bf16``: bfloat16 autocast for the attack episode and the target's AT step (the
  look-ahead ŵ included). Policy updates (REINFORCE/PPO rewards are small differences of
  losses), the per-epoch monitor and every evaluation stay in float32, so reported robustness
  never comes from a bf16 attack. Attack gradients under bf16: the perturbation δ, the
  projection and the step stay float32 (autocast casts the input of the first layer, the
  gradient flows back to the float32 δ) and the loss is computed in float32 (cross-entropy is
  on autocast's float32 list); only the convolutions and matmuls run in bf16. bf16 keeps
  float32's exponent range, so gradients do not underflow and no loss scaling is needed; the
  8-bit mantissa only changes the sign of near-zero gradient components.
  ``python -m benchmarks.gpu`` measures PGD accuracy of a bf16 attack against a float32
  attack on the same trained model.
* ``perf.channels_last``: the target's weights in NHWC, which cuDNN's tensor-core kernels
  prefer; convolutions then return NHWC activations whatever the input's layout.
* ``perf.compile``: ``nn.Module.compile`` of the target (its forward, and through AOTAutograd
  its backward) in place, so state-dict keys, checkpoints and the look-ahead's copy are
  unchanged. Uniform-budget policies (PGD-AT, FGSM) attack the full batch at every step, so
  shapes are fixed and ``perf.compile_mode=reduce_overhead`` (CUDA graphs) applies;
  policies that stop samples early (Dynamic AT, LAS-AT's per-sample K) shrink the active set
  and recompile once per new shape, after which the shape is marked dynamic.
* ``perf.pin_memory``: the one-time copies of the data set to the device go through pinned
  memory with ``non_blocking``. The hot loop has no host-device copies at all: the data set
  lives on the device and metrics are reduced there (one transfer per epoch,
  runners/tracking.py); the host syncs of a batch are the attack env's: one per episode for
  the budgets' range, plus the active-set size while some samples may have stopped
  (compaction). ``tests/runners/test_fast_path.py`` counts them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from learned_at.envs.options import setting

__all__ = ["CompileMode", "PerfConfig", "autocast", "prepare_model"]


class CompileMode(str, Enum):
    """``torch.compile`` modes (``perf.compile_mode``)."""

    default = "default"
    reduce_overhead = "reduce_overhead"  # CUDA graphs: fixed shapes only
    max_autotune = "max_autotune"

    @property
    def torch_name(self) -> str:
        """The spelling ``torch.compile(mode=...)`` expects."""
        return self.value.replace("_", "-")


@dataclass(frozen=True)
class PerfConfig:
    """GPU fast-path switches (all off by default; see runners/fast_path.py)."""

    bf16: bool = setting(False, "bfloat16 autocast for the attack and the target's AT step "
                         "(CUDA, or CPU where bf16 kernels exist); evaluation stays float32")
    channels_last: bool = setting(False, "the target's weights in NHWC memory format")
    compile: bool = setting(False, "compile the target with torch.compile (in place)")
    compile_mode: CompileMode = setting(CompileMode.default, "default, reduce_overhead (CUDA "
                                        "graphs) or max_autotune")
    pin_memory: bool = setting(False, "copy the data set to a CUDA device through pinned "
                               "memory, non-blocking")


def autocast(perf: PerfConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``perf.bf16``, else a no-op context."""
    if not perf.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def prepare_model(model: nn.Module, perf: PerfConfig) -> nn.Module:
    """Apply ``channels_last`` and ``compile`` to ``model`` (in place; returns it)."""
    if perf.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in stubs
    if perf.compile:
        model.compile(mode=CompileMode(perf.compile_mode).torch_name)
    return model

