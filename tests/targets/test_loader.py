"""Tests for targets.loader: epoch coverage, index mapping, determinism, augmentation."""

from __future__ import annotations

import torch

from learned_at.targets.datasets import DataSplit
from learned_at.targets.loader import DeviceLoader, apply_augmentation, augment_batch


def _split(n: int = 23, shape: tuple[int, int, int] = (3, 8, 8)) -> DataSplit:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    return DataSplit(images, torch.arange(n, dtype=torch.int64) % 10)


def test_epoch_covers_every_sample_once_and_indices_map_back() -> None:
    split = _split()
    loader = DeviceLoader(split, 5, "cpu", shuffle=True, generator=torch.Generator().manual_seed(1))
    assert len(loader) == 5
    for _ in range(2):
        batches = list(loader)
        assert [len(b.y) for b in batches] == [5, 5, 5, 5, 3]
        index = torch.cat([b.index for b in batches])
        assert sorted(index.tolist()) == list(range(23))
        assert not torch.equal(index, torch.arange(23))  # actually shuffled
        for b in batches:
            assert b.x.dtype == torch.float32 and b.index.dtype == torch.int64
            assert torch.equal(b.y, split.labels[b.index])
            assert torch.equal(b.x, split.images[b.index].float() / 255)
            assert b.offsets is None and b.flipped is None


def test_drop_last_and_no_shuffle() -> None:
    loader = DeviceLoader(_split(), 5, "cpu", shuffle=False, drop_last=True)
    assert len(loader) == 4
    assert torch.equal(torch.cat([b.index for b in loader]), torch.arange(20))


def test_same_seed_same_order() -> None:
    def order(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        loader = DeviceLoader(_split(), 4, "cpu", shuffle=True, augment=True, generator=g)
        return [i for b in loader for i in b.index.tolist() + b.offsets.flatten().tolist()]

    assert order(3) == order(3)
    assert order(3) != order(4)


def test_augmentation_matches_apply_augmentation() -> None:
    split = _split(n=64, shape=(3, 6, 6))
    g = torch.Generator().manual_seed(2)
    loader = DeviceLoader(split, 64, "cpu", shuffle=True, augment=True, generator=g)
    (batch,) = list(loader)
    clean = split.images[batch.index].float() / 255
    assert batch.x.shape == clean.shape
    assert batch.x.min() >= 0 and batch.x.max() <= 1
    assert batch.offsets.shape == (64, 2) and batch.offsets.dtype == torch.int64
    assert int(batch.offsets.min()) >= 0 and int(batch.offsets.max()) <= 8
    assert 0 < int(batch.flipped.sum()) < 64
    assert torch.equal(apply_augmentation(clean, batch.offsets, batch.flipped), batch.x)
    # independent reference for each sample: pad, crop at (top, left), flip if asked
    padded = torch.nn.functional.pad(clean, (4, 4, 4, 4))
    for i in range(64):
        top, left = batch.offsets[i].tolist()
        ref = padded[i, :, top:top + 6, left:left + 6]
        if batch.flipped[i]:
            ref = ref.flip(-1)
        assert torch.equal(batch.x[i], ref)


def test_apply_augmentation_edge_cases() -> None:
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3) + 1
    identity = apply_augmentation(x, torch.full((2, 2), 1), torch.tensor([False, True]), pad=1)
    assert torch.equal(identity[0], x[0]) and torch.equal(identity[1], x[1].flip(-1))
    shifted = apply_augmentation(x, torch.tensor([[0, 0], [2, 2]]), torch.zeros(2, dtype=bool), 1)
    # offset (0, 0): the image moves down-right by one, zeros enter at the top/left
    assert torch.equal(shifted[0, 0], torch.tensor([[0.0, 0, 0], [0, 1, 2], [0, 4, 5]]))
    assert torch.equal(shifted[1, 0], torch.tensor([[14.0, 15, 0], [17, 18, 0], [0, 0, 0]]))
    # works for signed perturbations and integer dtypes alike
    y, off, fl = augment_batch(x.to(torch.int64) - 9, torch.Generator().manual_seed(0), pad=1)
    assert y.dtype == torch.int64 and torch.equal(apply_augmentation(x.to(torch.int64) - 9,
                                                                     off, fl, pad=1), y)


def test_rank_slices_together_are_the_one_process_batch() -> None:
    """Data-parallel shards: same order and augmentation as one process, sliced by rank."""
    def batches(shard: tuple[int, int]) -> list:
        loader = DeviceLoader(_split(32), 8, "cpu", shuffle=True, augment=True, drop_last=True,
                              generator=torch.Generator().manual_seed(5), shard=shard)
        return [list(loader) for _ in range(2)]  # two epochs: the generator stays in step

    whole = batches((0, 1))
    ranks = [batches((r, 2)) for r in range(2)]
    for epoch in range(2):
        for i, b in enumerate(whole[epoch]):
            parts = [ranks[r][epoch][i] for r in range(2)]
            assert [len(p.y) for p in parts] == [4, 4]
            for field in ("x", "y", "index", "offsets", "flipped"):
                assert torch.equal(torch.cat([getattr(p, field) for p in parts]),
                                   getattr(b, field)), field


def test_global_batch_must_split_evenly() -> None:
    import pytest

    with pytest.raises(ValueError, match="divisible by the number of processes"):
        DeviceLoader(_split(), 6, "cpu", shuffle=True, shard=(0, 4))
