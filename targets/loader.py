"""On-device batch loading with optional batched CIFAR augmentation.

The whole split is copied to the device once as uint8; each batch is gathered by index and
converted to float32 in [0, 1] on the device. Augmentation (random crop with zero padding and
random horizontal flip) is done for the whole batch at once with advanced indexing, without a
Python loop over samples, and returns the per-sample crop offsets and flip flags so that other
per-sample tensors (e.g. stored perturbations) can be transformed identically with
:func:`apply_augmentation`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from learned_at.targets.datasets import DataSplit


@dataclass
class Batch:
    """One mini-batch on the loader's device.

    Attributes:
        x: float32 (B, C, H, W), values in [0, 1] (augmented when the loader augments).
        y: int64 (B,), class labels.
        index: int64 (B,), indices of the samples in the split (``split.images[index]``).
        offsets: int64 (B, 2), crop (top, left) in the padded image, in [0, 2 * pad];
            ``None`` without augmentation. ``(pad, pad)`` is the un-shifted crop.
        flipped: bool (B,), whether the sample was flipped horizontally; ``None`` without
            augmentation.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    offsets: torch.Tensor | None = None
    flipped: torch.Tensor | None = None


def to_device(t: torch.Tensor, device: torch.device, pin_memory: bool = False) -> torch.Tensor:
    """Copy ``t`` to ``device``; through pinned memory, non-blocking, when asked and on CUDA."""
    if pin_memory and device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def apply_augmentation(t: torch.Tensor, offsets: torch.Tensor, flipped: torch.Tensor,
                       pad: int = 4) -> torch.Tensor:
    """Crop each sample of ``t`` from its zero-padded version at ``offsets``, then flip.

    Args:
        t: (B, C, H, W), any dtype (images, perturbations, ...).
        offsets: int64 (B, 2), (top, left) of the crop in the padded (H + 2 pad, W + 2 pad)
            image, each in [0, 2 * pad].
        flipped: bool (B,), flip the cropped sample left-right where True.
        pad: zero padding on each side, in pixels.

    Returns:
        (B, C, H, W), same dtype and device as ``t``. Pixels shifted in from outside are 0.
    """
    b, c, h, w = t.shape
    padded = F.pad(t, (pad, pad, pad, pad))
    rows = offsets[:, 0:1] + torch.arange(h, device=t.device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=t.device)  # (B, W)
    bi = torch.arange(b, device=t.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=t.device).view(1, c, 1, 1)
    crop = padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]
    return torch.where(flipped.view(b, 1, 1, 1), crop.flip(-1), crop)


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None,
                  pad: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random crop (zero padding ``pad``) and random horizontal flip, per sample.

    Args:
        x: (B, C, H, W) images, any dtype.
        generator: RNG on ``x``'s device (``None``: the global RNG of that device).
        pad: padding in pixels; crop offsets are uniform in [0, 2 * pad] per axis.

    Returns:
        ``(x_aug, offsets, flipped)``: x_aug (B, C, H, W) like ``x``; offsets int64 (B, 2)
        (top, left); flipped bool (B,) with probability 1/2 each.
    """
    offsets, flipped = draw_augmentation(x.shape[0], x.device, generator, pad)
    return apply_augmentation(x, offsets, flipped, pad), offsets, flipped


def draw_augmentation(b: int, device: torch.device, generator: torch.Generator | None = None,
                      pad: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of :func:`augment_batch` for ``b`` samples: offsets int64 (b, 2) uniform
    in [0, 2 * pad], flipped bool (b,)."""
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=device)
    flipped = torch.randint(0, 2, (b,), generator=generator, device=device).bool()
    return offsets, flipped


class DeviceLoader:
    """Iterate over a :class:`DataSplit` in mini-batches that live on ``device``.

    The split's uint8 images and labels are copied to ``device`` once, at construction.
    Each epoch (each ``iter``) draws a fresh permutation when ``shuffle``; float conversion
    (divide by 255) and augmentation happen per batch on the device.

    Args:
        split: the data, uint8 (N, C, H, W) and int64 (N,).
        batch_size: B, samples per batch (the last batch may be smaller unless ``drop_last``).
        device: where the data and batches live.
        shuffle: draw a new random order every epoch (else the split's order).
        augment: random crop (4-pixel zero padding) + horizontal flip, filling
            ``Batch.offsets`` / ``Batch.flipped``.
        drop_last: drop the final incomplete batch.
        generator: RNG for the order and the augmentation. It must live on the same device
            as the data; the caller creates it, e.g.
            ``torch.Generator(device=device).manual_seed(seed)``. ``None``: global RNG.
        pin_memory: copy the split to a CUDA device through pinned memory, non-blocking.
        shard: ``(rank, world_size)`` for data-parallel training: ``batch_size`` is the global
            batch; every rank draws the same order and augmentation for the whole global
            batch (the generator must be seeded alike on every rank) and yields its contiguous
            slice of ``batch_size // world_size`` samples, so the ranks' slices together are
            exactly the one-process batch. ``batch_size`` must be divisible by the world size.
    """

    def __init__(self, split: DataSplit, batch_size: int, device: torch.device | str, *,
                 shuffle: bool, augment: bool = False, drop_last: bool = False,
                 generator: torch.Generator | None = None, pin_memory: bool = False,
                 shard: tuple[int, int] = (0, 1)) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rank, world_size = shard
        if batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(f"batch_size={batch_size} (the global batch) must be divisible by "
                             f"the number of processes ({world_size}): accepted multiples of "
                             f"{world_size}")
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(f"generator lives on {generator.device} but the data on "
                             f"{self.device}: create it with torch.Generator(device=...)")
        self.images = to_device(split.images, self.device, pin_memory)
        self.labels = to_device(split.labels, self.device, pin_memory)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.generator = generator

    @property
    def local_batch_size(self) -> int:
        """Samples per batch on this rank (``batch_size`` for one process)."""
        return self.batch_size // self.world_size

    @property
    def num_samples(self) -> int:
        """N, the number of samples in the split."""
        return self.labels.shape[0]

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[Batch]:
        n = self.num_samples
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        if self.world_size > 1:
            yield from self._shards(order)
            return
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images.index_select(0, index).to(torch.float32).div_(255.0)
            batch = Batch(x=x, y=self.labels.index_select(0, index), index=index)
            if self.augment:
                batch.x, batch.offsets, batch.flipped = augment_batch(x, self.generator)
            yield batch

    def _shards(self, order: torch.Tensor) -> Iterator[Batch]:
        """This rank's slice of every global batch (augmentation drawn for the global batch)."""
        local = self.local_batch_size
        mine = slice(self.rank * local, (self.rank + 1) * local)
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            n = index.shape[0]
            draws = draw_augmentation(n, self.device, self.generator) if self.augment else None
            index = index[mine]
            x = self.images.index_select(0, index).to(torch.float32).div_(255.0)
            batch = Batch(x=x, y=self.labels.index_select(0, index), index=index)
            if draws is not None:
                batch.offsets, batch.flipped = draws[0][mine], draws[1][mine]
                batch.x = apply_augmentation(x, batch.offsets, batch.flipped)
            yield batch
