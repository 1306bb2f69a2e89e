"""Per-sample prior memory: indexed storage that follows the loader's crop and flip."""

import torch

from learned_at.agents.prior_memory import PriorMemory, invert_augmentation
from learned_at.targets.loader import apply_augmentation, augment_batch


def test_invert_augmentation_round_trip_on_covered_pixels():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(6, 3, 8, 8, generator=g)
    _, offsets, flipped = augment_batch(base, g)
    t = torch.rand(6, 3, 8, 8, generator=g)
    stored = invert_augmentation(t, base, offsets, flipped)
    back = apply_augmentation(stored, offsets, flipped)
    inside = apply_augmentation(torch.ones_like(base), offsets, flipped).bool()
    assert torch.equal(back[inside], t[inside])
    # pixels the crop did not cover keep the old value
    covered = invert_augmentation(torch.ones_like(t), torch.zeros_like(base), offsets, flipped)
    assert torch.equal(stored[covered == 0], base[covered == 0])


def test_memory_reads_and_writes_by_dataset_index():
    mem = PriorMemory(10, (1, 4, 4), "cpu")
    idx = torch.tensor([7, 2])
    v = torch.arange(32.).view(2, 1, 4, 4)
    mem.write(idx, v)
    torch.testing.assert_close(mem.read(torch.tensor([2, 7])), v.flip(0))
    assert mem.values[[0, 1, 3, 4, 5, 6, 8, 9]].abs().sum() == 0


def test_memory_in_half_precision_returns_float32():
    mem = PriorMemory(4, (1, 2, 2), "cpu", dtype="float16")
    mem.write(torch.tensor([1]), torch.full((1, 1, 2, 2), 0.25))
    out = mem.read(torch.tensor([1]))
    assert out.dtype == torch.float32 and torch.all(out == 0.25)
