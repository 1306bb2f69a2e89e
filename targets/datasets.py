"""Image classification data sets, read from their official on-disk formats into uint8 tensors.

Supported names:
    ``digits``    scikit-learn's 8x8 grey digits (bundled, no download), fixed 80/20 split.
    ``mnist``     IDX files (gzip or raw), 28x28 grey, 60k train / 10k test.
    ``cifar10``   python pickle batches, 32x32 RGB, 50k / 10k, 10 classes.
    ``cifar100``  python pickle ``train`` / ``test``, 32x32 RGB, 50k / 10k, 100 fine classes.

With ``download=True`` a missing MNIST / CIFAR-10 / CIFAR-100 is first downloaded into ``root``
by torchvision (the optional extra ``.[vision]``), into the folders the readers search
(``MNIST/raw``, ``cifar-10-batches-py``, ``cifar-100-python``).

Everything is returned on the CPU as ``uint8`` images of shape (N, C, H, W) with values in
[0, 255] and ``int64`` labels of shape (N,); conversion to float happens per batch in
:mod:`targets.loader`. CIFAR pickles are read with a restricted unpickler that can only build
numpy arrays, so a crafted file cannot run code.
"""

from __future__ import annotations

import _codecs
import gzip
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]  # private name
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

DATASET_NAMES = ("digits", "mnist", "cifar10", "cifar100")


class DataSetError(RuntimeError):
    """A data set's files are missing, unreadable or malformed. The message says how to fix it."""


class DataSetMissingError(DataSetError):
    """A data set's files are not in ``root`` (``download=True`` fetches them)."""


@dataclass(frozen=True)
class DataSplit:
    """One split of a data set, on the CPU.

    Attributes:
        images: uint8 (N, C, H, W), values in [0, 255].
        labels: int64 (N,), values in [0, num_classes).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 (N,) with N = {self.images.shape[0]}, got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class DataSet:
    """A named data set with train and test splits.

    Attributes:
        name: one of :data:`DATASET_NAMES`.
        train, test: the splits; images share the shape (C, H, W).
        num_classes: K; labels lie in [0, K).
    """

    name: str
    train: DataSplit
    test: DataSplit
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)


def load_dataset(name: str, root: str | None = None, download: bool = False) -> DataSet:
    """Load a data set by name.

    Args:
        name: ``digits``, ``mnist``, ``cifar10`` or ``cifar100``.
        root: folder holding the files (unused for ``digits``; required for the others).
        download: fetch missing files into ``root`` first (:func:`download_dataset`).

    Returns:
        The :class:`DataSet`, CPU tensors.

    Raises:
        ValueError: unknown ``name``.
        DataSetError: ``root`` missing, files absent, unreadable or malformed.
    """
    loaders: dict[str, Callable[[str | None], DataSet]] = {
        "digits": _load_digits,
        "mnist": _load_mnist,
        "cifar10": lambda r: _load_cifar(r, "cifar10"),
        "cifar100": lambda r: _load_cifar(r, "cifar100"),
    }
    if name not in loaders:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    try:
        return loaders[name](root)
    except DataSetMissingError:
        if not download or name == "digits":
            raise
    download_dataset(name, str(_require_root(root, name)))
    return loaders[name](root)


def download_dataset(name: str, root: str) -> None:
    """Download a data set's train and test splits into ``root`` with torchvision.

    Raises:
        DataSetError: torchvision is not installed (or does not import with this torch), or
            the download failed; the message says what to do instead.
    """
    try:
        from torchvision import datasets
    except Exception as err:  # ImportError, or a torchvision built for another torch
        raise DataSetError(
            f"data.download=true needs the optional package torchvision (pip install "
            f"'.[vision]'), which does not import here ({type(err).__name__}: {err}); or put "
            f"the {name} files into data.root yourself") from None
    classes = {"mnist": "MNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
    if name not in classes:
        raise DataSetError(f"data set {name!r} cannot be downloaded (it needs no files)")
    try:
        for train in (True, False):
            getattr(datasets, classes[name])(root, train=train, download=True)
    except Exception as err:  # network, disk, checksum: all one message
        raise DataSetError(f"downloading {name} into {root} failed ({type(err).__name__}: "
                           f"{err}); retry, or put the files into data.root yourself") from None


def _split(images: np.ndarray, labels: np.ndarray) -> DataSplit:
    """Wrap numpy arrays (N, C, H, W) uint8 and (N,) ints as a :class:`DataSplit`."""
    return DataSplit(torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
                     torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{what}: labels outside [0, {num_classes})")


def _require_root(root: str | None, name: str) -> Path:
    if root is None:
        raise DataSetError(f"data set {name!r} needs its files on disk, but data.root is not "
                           f"set: pass data.root=/path/to/folder")
    return Path(root).expanduser()


# --------------------------------------------------------------------------------------- digits


def _load_digits(root: str | None = None) -> DataSet:
    """sklearn digits, (N, 1, 8, 8) uint8 via round(v * 255 / 16); split fixed by random_state=0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(labels.size), test_size=0.2,
                                           random_state=0, stratify=labels)
    return DataSet("digits", _split(images[idx_train], labels[idx_train]),
                   _split(images[idx_test], labels[idx_test]), num_classes=10)


# ---------------------------------------------------------------------------------------- mnist

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file (gzip or raw) holding uint8 data of ``ndim`` dimensions.

    Header: two zero bytes, type code 0x08 (uint8), ndim, then ndim big-endian uint32 sizes.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: file too short for an IDX header")
    zero, dtype_code, file_ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or file_ndim != ndim:
        raise ValueError(f"{path}: bad IDX magic {raw[:4].hex()} (expected 000008{ndim:02x})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes but header dims {dims} need {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_mnist_files(folders: list[Path]) -> tuple[Path, dict[str, Path]] | None:
    """First folder holding all four MNIST files (each .gz or raw) and their paths, or None."""
    for folder in folders:
        found: dict[str, Path] = {}
        for stem in _MNIST_FILES:
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        if len(found) == len(_MNIST_FILES):
            return folder, found
    return None


def _load_mnist(root: str | None) -> DataSet:
    """MNIST from IDX files, (N, 1, 28, 28) uint8."""
    base = _require_root(root, "mnist")
    searched = [base, base / "MNIST" / "raw", base / "raw"]
    hit = _find_mnist_files(searched)
    if hit is None:
        raise DataSetMissingError(
            f"data set 'mnist': files {', '.join(_MNIST_FILES)} (each optionally .gz) not all "
            f"found in any of the folders searched: {', '.join(str(p) for p in searched)}. "
            f"Pass data.root=/path/to/folder holding them (or its MNIST/raw subfolder), or "
            f"data.download=true")
    folder, found = hit
    try:
        splits = []
        for prefix in ("train", "t10k"):
            images = _read_idx(found[f"{prefix}-images-idx3-ubyte"], ndim=3)
            labels = _read_idx(found[f"{prefix}-labels-idx1-ubyte"], ndim=1)
            if images.shape[0] != labels.shape[0]:
                raise ValueError(f"{prefix}: {images.shape[0]} images but {labels.shape[0]} labels")
            _check_labels(labels, 10, prefix)
            splits.append(_split(images[:, None], labels))
    except Exception as err:  # corrupt gzip/IDX data surfaces as many exception types
        raise DataSetError(f"data set 'mnist': cannot read the IDX files in {folder}: {err}. "
                           f"Re-download them or pass data.root=/path/to/a/good/copy") from err
    return DataSet("mnist", splits[0], splits[1], num_classes=10)


# -------------------------------------------------------------------------------------- cifar

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol-5 arrays
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,  # bytes in protocol <= 2 pickles written by Python 3
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only construct numpy arrays and builtin containers/scalars."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"forbidden global {module}.{name} in data file (only numpy arrays are allowed)"
            ) from None


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images (N, 3, 32, 32) uint8, labels (N,) int64."""
    with open(path, "rb") as f:
        obj = _RestrictedUnpickler(f, encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    entry = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in entry or label_key not in entry:
        raise ValueError(f"{path}: keys 'data' and {label_key!r} required, found {sorted(entry)}")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: data must be uint8 N x 3072, got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} rows but labels of shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(root: str | None, name: str) -> DataSet:
    """CIFAR-10 / CIFAR-100 from python pickles."""
    base = _require_root(root, name)
    if name == "cifar10":
        sub, label_key, num_classes = "cifar-10-batches-py", "labels", 10
        train_files, test_files = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    else:
        sub, label_key, num_classes = "cifar-100-python", "fine_labels", 100
        train_files, test_files = ["train"], ["test"]
    searched = [base / sub, base]
    folder = next((d for d in searched if all((d / f).is_file()
                                              for f in train_files + test_files)), None)
    if folder is None:
        raise DataSetMissingError(
            f"data set {name!r}: files {', '.join(train_files + test_files)} not all found in "
            f"any of the folders searched: {', '.join(str(p) for p in searched)}. "
            f"Pass data.root=/path/to/folder holding {sub}/, or data.download=true")
    try:
        splits = []
        for files in (train_files, test_files):
            parts = [_read_cifar_batch(folder / f, label_key) for f in files]
            images = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
            _check_labels(labels, num_classes, str(folder))
            splits.append(_split(images, labels))
    except Exception as err:  # corrupt pickles raise many exception types
        raise DataSetError(f"data set {name!r}: cannot read the pickle batches in {folder}: "
                           f"{err}. Re-download them or pass data.root=/path/to/a/good/copy"
                           ) from err
    return DataSet(name, splits[0], splits[1], num_classes=num_classes)


def subset_dataset(data: DataSet, n_train: int = 0, n_test: int = 0) -> DataSet:
    """The first ``n_train`` / ``n_test`` samples of each split (0 keeps a split whole)."""

    def cut(split: DataSplit, n: int) -> DataSplit:
        return split if n <= 0 else DataSplit(split.images[:n], split.labels[:n])

    return DataSet(data.name, cut(data.train, n_train), cut(data.test, n_test), data.num_classes)


def split_validation(data: DataSet, n_val: int) -> tuple[DataSet, DataSplit | None]:
    """Hold out the *last* ``n_val`` training samples as a validation split (Fast-BAT's
    reference: the first 45k of CIFAR-10's training set train, the last 5k validate).

    Returns:
        (the data set with the shortened training split, the validation split), or
        (``data``, None) when ``n_val`` is 0.

    Raises:
        ValueError: ``n_val`` is negative or leaves no training sample.
    """
    if n_val == 0:
        return data, None
    n = len(data.train)
    if not 0 < n_val < n:
        raise ValueError(f"data.val_size must be in [0, {n}) (the training split has {n} "
                         f"samples), got {n_val}")
    train, val = data.train, DataSplit(data.train.images[n - n_val:], data.train.labels[n - n_val:])
    train = DataSplit(train.images[:n - n_val], train.labels[:n - n_val])
    return DataSet(data.name, train, data.test, data.num_classes), val
