"""Tests for targets.datasets: digits split, IDX/pickle parsing, errors, restricted unpickling."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from learned_at.targets.datasets import DataSetError, load_dataset


def test_digits_shapes_range_and_fixed_split() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.num_classes == 10 and a.image_shape == (1, 8, 8)
    assert (len(a.train), len(a.test)) == (1437, 360)
    for split in (a.train, a.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.shape[1:] == (1, 8, 8)
        assert int(split.images.max()) == 255 and int(split.images.min()) == 0
        assert set(split.labels.tolist()) == set(range(10))
    # every value is round(v * 255 / 16) of an integer v in 0..16
    allowed = {round(v * 255 / 16) for v in range(17)}
    assert set(a.train.images.unique().tolist()) <= allowed
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    # disjoint: train + test reassemble the 1797 sklearn images (as a multiset of rows)
    from sklearn.datasets import load_digits

    full = np.rint(load_digits().images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    both = torch.cat([a.train.images, a.test.images]).reshape(1797, -1).numpy()
    assert sorted(map(bytes, both)) == sorted(map(bytes, full))


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fake_mnist_gz_loads_values(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tr_x, te_x = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    tr_y, te_y = np.array([0, 1, 9, 4, 4]), np.array([7, 2, 3])
    for stem, arr in [("train-images-idx3-ubyte", tr_x), ("train-labels-idx1-ubyte", tr_y),
                      ("t10k-images-idx3-ubyte", te_x), ("t10k-labels-idx1-ubyte", te_y)]:
        _write_idx(raw / f"{stem}.gz", arr)
    ds = load_dataset("mnist", str(tmp_path))
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10
    assert np.array_equal(ds.train.images[:, 0].numpy(), tr_x)
    assert np.array_equal(ds.test.images[:, 0].numpy(), te_x)
    assert ds.train.labels.tolist() == tr_y.tolist() and ds.test.labels.tolist() == te_y.tolist()


def test_corrupt_mnist_header_raises(tmp_path: Path) -> None:
    for stem in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        (tmp_path / stem).write_bytes(b"\x00\x00\x09\x03garbage")
    with pytest.raises(DataSetError, match="mnist"):
        load_dataset("mnist", str(tmp_path))


def test_missing_mnist_message(tmp_path: Path) -> None:
    with pytest.raises(DataSetError) as info:
        load_dataset("mnist", str(tmp_path / "nowhere"))
    msg = str(info.value)
    for stem in ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        assert stem in msg
    assert str(tmp_path / "nowhere") in msg and "data.root" in msg


def test_mnist_without_root_says_data_root_required() -> None:
    with pytest.raises(DataSetError, match="data.root"):
        load_dataset("mnist")


def _write_cifar(folder: Path, bytes_keys: bool, protocol: int) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        labels = [i % 10, (i + 3) % 10]
        key = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
        with open(folder / name, "wb") as f:
            pickle.dump({key("data"): data, key("labels"): labels}, f, protocol=protocol)
        written[name] = data
    return written


@pytest.mark.parametrize("bytes_keys, protocol", [(False, 4), (False, 5), (True, 2)])
def test_fake_cifar10_loads(tmp_path: Path, bytes_keys: bool, protocol: int) -> None:
    written = _write_cifar(tmp_path / "cifar-10-batches-py", bytes_keys, protocol)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.image_shape == (3, 32, 32) and (len(ds.train), len(ds.test)) == (10, 2)
    assert ds.train.labels.tolist() == [0, 3, 1, 4, 2, 5, 3, 6, 4, 7]
    # row layout is CHW: first 1024 bytes are the red plane
    first = written["data_batch_1"][0]
    assert np.array_equal(ds.train.images[0, 0].numpy().ravel(), first[:1024])
    assert np.array_equal(ds.train.images[0, 2].numpy().ravel(), first[2048:])
    assert np.array_equal(ds.test.images.reshape(2, -1).numpy(), written["test_batch"])


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for name, fine in [("train", [99, 5]), ("test", [0, 42])]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": fine, "coarse_labels": [0, 1]}, f)
    ds = load_dataset("cifar100", str(tmp_path))  # files directly in root
    assert ds.num_classes == 100 and ds.train.labels.tolist() == [99, 5]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, bytes_keys=False, protocol=4)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({"data": _Evil(marker), "labels": [0]}, f)
    with pytest.raises(DataSetError, match="system") as info:
        load_dataset("cifar10", str(tmp_path))
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()


def test_unknown_name_lists_valid() -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    for name in ["digits", "mnist", "cifar10", "cifar100"]:
        assert name in str(info.value)


def _fake_torchvision(monkeypatch: pytest.MonkeyPatch, calls: list) -> None:
    """torchvision's datasets.MNIST, as far as data.download uses it: it writes the four
    gzip'd IDX files into <root>/MNIST/raw (torchvision does not import against this torch, and
    tests never touch the network)."""
    import sys
    import types

    class MNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(int(train))
            n, prefix = (6, "train") if train else (4, "t10k")
            _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))

    datasets = types.ModuleType("torchvision.datasets")
    datasets.MNIST = MNIST
    torchvision = types.ModuleType("torchvision")
    torchvision.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


def test_download_fetches_missing_files_through_torchvision(tmp_path: Path, monkeypatch) -> None:
    calls: list = []
    _fake_torchvision(monkeypatch, calls)
    with pytest.raises(DataSetError, match="or data.download=true"):
        load_dataset("mnist", str(tmp_path))
    assert calls == []  # no download unless asked
    ds = load_dataset("mnist", str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert (len(ds.train), len(ds.test), ds.image_shape) == (6, 4, (1, 28, 28))
    load_dataset("mnist", str(tmp_path), download=True)  # present now: read, not fetched
    assert len(calls) == 2


def test_download_without_torchvision_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails
    with pytest.raises(DataSetError, match=r"pip install '.\[vision\]'"):
        load_dataset("cifar10", str(tmp_path), download=True)
