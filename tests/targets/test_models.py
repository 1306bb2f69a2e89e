"""Tests for targets.models: registry, output shapes, size checks, digits_cnn trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from learned_at.targets.models import MODELS, Normalize, make_model

NATURAL_SHAPE = {"digits_cnn": (1, 8, 8), "mnist_cnn": (1, 28, 28), "mnist_small": (1, 28, 28)}


@pytest.mark.parametrize("name", [n for n in MODELS if n != "wrn34_10"])
def test_logits_shape(name: str) -> None:
    torch.manual_seed(0)
    shape = NATURAL_SHAPE.get(name, (3, 32, 32))
    model = make_model(name, shape, 7)
    out = model(torch.rand(2, *shape))
    assert out.shape == (2, 7) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_wrn34_10_cheap_forward() -> None:
    model = make_model("wrn34_10", (3, 32, 32), 10).eval()
    assert 46_000_000 < sum(p.numel() for p in model.parameters()) < 46_300_000
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_resnet_param_counts() -> None:
    assert sum(p.numel() for p in make_model("resnet18", (3, 32, 32), 10).parameters()) \
        == 11_173_962
    assert sum(p.numel() for p in make_model("preact_resnet18", (3, 32, 32), 10).parameters()) \
        == 11_172_170


def test_mnist_cnn_flatten_follows_image_shape() -> None:
    model = make_model("mnist_cnn", (3, 20, 20), 10)  # 20 -> 10 -> 5
    assert model(torch.rand(2, 3, 20, 20)).shape == (2, 10)
    assert make_model("cifar_cnn", (3, 32, 32), 10)[-4].in_features == 196 * 4 * 4


def test_incompatible_shape_and_unknown_name() -> None:
    with pytest.raises(ValueError, match="at least 8x8"):
        make_model("cifar_cnn", (3, 4, 4), 10)
    with pytest.raises(ValueError) as info:
        make_model("vgg16", (3, 32, 32), 10)
    for name in MODELS:
        assert name in str(info.value)


def test_normalize() -> None:
    norm = Normalize([0.5, 0.25], [0.5, 0.25])
    out = norm(torch.ones(1, 2, 2, 2))
    assert torch.allclose(out, torch.tensor([1.0, 3.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2))


def test_digits_cnn_trains_above_97_percent() -> None:
    from learned_at.targets.datasets import load_dataset
    from learned_at.targets.loader import DeviceLoader

    torch.manual_seed(0)
    data = load_dataset("digits")
    model = make_model("digits_cnn", data.image_shape, data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loader = DeviceLoader(data.train, 64, "cpu", shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    for _ in range(12):
        for b in loader:
            opt.zero_grad()
            F.cross_entropy(model(b.x), b.y).backward()
            opt.step()
    with torch.no_grad():
        pred = model(data.test.images.float() / 255).argmax(1)
    assert (pred == data.test.labels).float().mean() > 0.97
