"""Metric values buffered as device tensors, brought to the host in one transfer per device."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["host_values"]


def host_values(values: list[torch.Tensor | float]) -> list[float]:
    """Converts buffered values to floats with one device-to-host transfer per device."""
    out: list[float] = [0.0] * len(values)
    by_device: dict[torch.device, list[int]] = {}
    for index, value in enumerate(values):
        if isinstance(value, torch.Tensor):
            by_device.setdefault(value.device, []).append(index)
        else:
            out[index] = value
    pending: list[tuple[list[int], torch.Tensor, Any]] = []
    for device, indices in by_device.items():
        dtype = torch.float32 if device.type == "mps" else torch.float64
        # stack per dtype (torch.stack needs one dtype), then one tensor per device
        by_dtype: dict[torch.dtype, list[int]] = {}
        for index in indices:
            by_dtype.setdefault(values[index].dtype, []).append(index)  # type: ignore[union-attr]
        order: list[int] = []
        parts: list[torch.Tensor] = []
        for group in by_dtype.values():
            order.extend(group)
            parts.append(torch.stack([values[i] for i in group]).to(dtype))  # type: ignore[misc]
        stacked = torch.cat(parts)
        if device.type == "cuda":
            host = stacked.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            pending.append((order, host, event))
        else:
            pending.append((order, stacked.cpu(), None))
    for order, host, event in pending:
        if event is not None:
            event.synchronize()
        for index, value in zip(order, host.tolist()):
            out[index] = float(value)
    return out
