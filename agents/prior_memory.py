"""Per-sample memory of image-shaped tensors, indexed by data-set index, aligned with augmentation.

FGSM-PGI keeps each sample's perturbation (and momentum) across epochs. The loader augments
images with a random crop (zero padding) and a horizontal flip that change every epoch, so a
perturbation stored in the coordinates of one epoch's crop would be misaligned with the next
epoch's crop of the same image — the reference code's bug (docs/references.md §3.3, item 6).

Here the memory holds values in *un-augmented* image coordinates:

* :meth:`PriorMemory.read` crops/flips the stored values exactly like the batch's images
  (:func:`targets.loader.apply_augmentation`), so pixel (i, j) of the prior lies on the same
  image pixel as in the epoch it was written. Pixels of the crop that fall in the zero padding
  read 0 (no prior there; the image itself is 0 there).
* :meth:`PriorMemory.write` applies the inverse map (:func:`invert_augmentation`): flip back,
  then place the crop at its offset. Stored pixels that the crop did not cover (at most
  ``pad`` rows/columns at the border) keep their previous value: the newest information is
  written where it exists and nothing is invented where it does not.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from learned_at.envs.options import parse_option
from learned_at.targets.distributed import all_gather_cat
from learned_at.targets.loader import apply_augmentation

class MemoryDtype(str, Enum):
    """Storage precision of a per-sample memory (reads always return float32)."""

    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


_DTYPES = {MemoryDtype.float32: torch.float32, MemoryDtype.float16: torch.float16,
           MemoryDtype.bfloat16: torch.bfloat16}


def invert_augmentation(t: torch.Tensor, base: torch.Tensor, offsets: torch.Tensor,
                        flipped: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Map augmented values back to image coordinates, keeping ``base`` where uncovered.

    The inverse of :func:`targets.loader.apply_augmentation` on the pixels the crop covers:
    ``apply_augmentation(invert_augmentation(t, b, o, f), o, f)`` equals ``t`` wherever the
    crop lies inside the image (tested).

    Shape:
        t: (B, C, H, W) augmented values; base: (B, C, H, W) current stored values;
        offsets: int64 (B, 2); flipped: bool (B,). Returns (B, C, H, W) like ``base``.
    """
    b, c, h, w = t.shape
    unflipped = torch.where(flipped.view(b, 1, 1, 1), t.flip(-1), t)
    padded = F.pad(base, (pad, pad, pad, pad))
    rows = offsets[:, 0:1] + torch.arange(h, device=t.device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=t.device)  # (B, W)
    bi = torch.arange(b, device=t.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=t.device).view(1, c, 1, 1)
    padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)] = unflipped.to(padded.dtype)
    return padded[:, :, pad:pad + h, pad:pad + w]


class PriorMemory(nn.Module):
    """A (num_samples, C, H, W) buffer on the device, read and written per batch by index.

    The buffer is part of ``state_dict`` (checkpointed, so a resumed run continues with the
    same priors). Memory: num_samples·C·H·W values (CIFAR-10, float32: 614 MB).

    Args:
        num_samples: size of the training split (indices are data-set indices).
        image_shape: (C, H, W).
        device: where the buffer lives.
        dtype: ``float32``, ``float16`` or ``bfloat16`` (storage only; reads return float32).
        pad: the loader's crop padding.
    """

    values: torch.Tensor  # registered buffer

    def __init__(self, num_samples: int, image_shape: tuple[int, int, int],
                 device: torch.device | str, dtype: MemoryDtype | str = MemoryDtype.float32,
                 pad: int = 4) -> None:
        super().__init__()
        dtype = parse_option(MemoryDtype, dtype, "policy.memory_dtype")
        self.pad = pad
        self.register_buffer("values", torch.zeros(num_samples, *image_shape,
                                                   dtype=_DTYPES[dtype], device=device))

    def reset(self) -> None:
        """Zero every stored value."""
        self.values.zero_()

    def read(self, index: torch.Tensor, offsets: torch.Tensor | None = None,
             flipped: torch.Tensor | None = None) -> torch.Tensor:
        """Stored values of samples ``index``, cropped/flipped like their images.

        Shape:
            index: int64 (B,); offsets: (B, 2) or None (no augmentation); flipped: (B,).
            Returns float32 (B, C, H, W).
        """
        t = self.values.index_select(0, index).float()
        if offsets is None:
            return t
        assert flipped is not None  # the loader gives offsets and flips together
        return apply_augmentation(t, offsets, flipped, self.pad)

    def write(self, index: torch.Tensor, value: torch.Tensor, offsets: torch.Tensor | None = None,
              flipped: torch.Tensor | None = None) -> None:
        """Store ``value`` (B, C, H, W), given in augmented coordinates, for samples ``index``.

        In a torchrun job every rank writes the whole global batch's rows (one all-gather of
        the B rows per rank): a sample's slice changes rank from epoch to epoch, so every
        rank keeps the whole memory, and rank 0's checkpoint holds it whole."""
        value = value.detach()
        if offsets is not None:
            assert flipped is not None  # the loader gives offsets and flips together
            value = invert_augmentation(value, self.values.index_select(0, index).float(),
                                        offsets, flipped, self.pad)
        self.values.index_copy_(0, all_gather_cat(index),
                                all_gather_cat(value.to(self.values.dtype)))
