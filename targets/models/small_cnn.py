"""Small CNNs: a tiny digits net, Dynamic AT's MNIST 4-layer and CIFAR 8-layer CNNs, and a
half-width MNIST CNN for CPU benchmarks.

All take float (B, C, H, W) inputs in [0, 1] and return logits (B, K). The Dynamic-AT
architectures follow docs/references.md §4.4 (the Keras L2 kernel penalties are left to the
optimiser).
"""

from __future__ import annotations

from torch import nn


def _check_min_size(name: str, image_shape: tuple[int, int, int], min_hw: int) -> None:
    _, h, w = image_shape
    if h < min_hw or w < min_hw:
        raise ValueError(f"model {name!r} needs images of at least {min_hw}x{min_hw} pixels "
                         f"(it pools them down), got image_shape={image_shape}")


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


def digits_cnn(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Tiny CNN for 8x8 digits, no BatchNorm.

    Conv3x3(32, same)-ReLU-Conv3x3(64, same)-ReLU-MaxPool2-Flatten-Dense128-ReLU-DenseK.
    Any (C, H, W) with H, W >= 2.
    """
    _check_min_size("digits_cnn", image_shape, 2)
    c, h, w = image_shape
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * (h // 2) * (w // 2), 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def mnist_cnn(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Dynamic AT's MNIST 4-layer CNN (docs/references.md §4.4).

    Conv3x3(32, same)-BN-ReLU-MaxPool2-Conv3x3(64, same)-BN-ReLU-MaxPool2-Flatten-Dense128-
    ReLU-DenseK. Any (C, H, W) with H, W >= 4; the flatten size is 64 * (H//4) * (W//4).
    """
    _check_min_size("mnist_cnn", image_shape, 4)
    c, h, w = image_shape
    return nn.Sequential(
        *_conv_bn_relu(c, 32), nn.MaxPool2d(2),
        *_conv_bn_relu(32, 64), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (h // 2 // 2) * (w // 2 // 2), 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def mnist_small(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """:func:`mnist_cnn` at half the width, for MNIST on a CPU (about 4x fewer operations).

    Conv3x3(16, same)-BN-ReLU-MaxPool2-Conv3x3(32, same)-BN-ReLU-MaxPool2-Flatten-Dense64-
    ReLU-DenseK; any (C, H, W) with H, W >= 4. The capacity Madry et al. (2018, fig. 4) find
    enough for PGD training at ε = 0.3 (their scale 8: 16 and 32 filters).
    """
    _check_min_size("mnist_small", image_shape, 4)
    c, h, w = image_shape
    return nn.Sequential(
        *_conv_bn_relu(c, 16), nn.MaxPool2d(2),
        *_conv_bn_relu(16, 32), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (h // 2 // 2) * (w // 2 // 2), 64), nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def cifar_cnn(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Dynamic AT's CIFAR-10 8-layer CNN (docs/references.md §4.4).

    [Conv3x3 64-BN-ReLU]x2-MaxPool2-[128]x2-MaxPool2-[196]x2-MaxPool2-Flatten-Dense256-BN1d-
    ReLU-DenseK. Any (C, H, W) with H, W >= 8; flatten size 196 * (H//8) * (W//8).
    """
    _check_min_size("cifar_cnn", image_shape, 8)
    c, h, w = image_shape
    layers: list[nn.Module] = []
    for c_out in (64, 128, 196):
        layers += [*_conv_bn_relu(c, c_out), *_conv_bn_relu(c_out, c_out), nn.MaxPool2d(2)]
        c, h, w = c_out, h // 2, w // 2
    return nn.Sequential(
        *layers, nn.Flatten(),
        nn.Linear(c * h * w, 256), nn.BatchNorm1d(256), nn.ReLU(),
        nn.Linear(256, num_classes),
    )
