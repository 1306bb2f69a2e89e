"""The LAS-AT strategy network: a trunk on the clean image and one categorical head per grid.

The reference (docs/references.md §1.2) uses a CIFAR ResNet-18 trunk (512-d average-pooled feature)
and one ``Linear(512, len(grid))`` per attack parameter; the policy is an independent
``Categorical(softmax(logits))`` per head, sampled per sample. Here the trunk is selectable:
``resnet18`` (the reference, for 32x32 inputs) or ``small_cnn`` (two strided convolutions, for
the 8x8 digits and 28x28 MNIST, where a ResNet-18 would cost more than the target itself).

Departure: the heads are zero-initialised, so the initial policy is exactly uniform over every
grid (the reference's default initialisation is only close to uniform); the distribution-evolution
plots then start from a known point.

The log-probability and entropy maths are pure functions (:func:`categorical_log_prob`,
:func:`categorical_entropy`, :func:`sample_categorical`) so that they can be checked by hand.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from learned_at.envs.options import parse_option

class Trunk(str, Enum):
    """Strategy-network trunks (``auto``: resnet18 for inputs of 32x32 and larger, else
    small_cnn)."""

    auto = "auto"
    resnet18 = "resnet18"
    small_cnn = "small_cnn"


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
    """One sample per row of ``softmax(logits)``.

    Shape:
        logits: (N, G). Returns (N,) int64 indices in [0, G).
    """
    probs = F.softmax(logits.detach().float(), dim=1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def categorical_log_prob(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[i, index_i] (differentiable in ``logits``).

    Shape:
        logits: (N, G); index: (N,) int64. Returns (N,).
    """
    return F.log_softmax(logits, dim=1).gather(1, index[:, None]).squeeze(1)


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy −Σ p log p of each row of ``softmax(logits)`` (nats). (N, G) -> (N,)."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1)


class SmallCnnTrunk(nn.Module):
    """Conv3x3(C→32, stride 2)-ReLU-Conv3x3(32→64, stride 2)-ReLU-AvgPool(2x2) → 256 features.

    Any (C, H, W) with H, W >= 2 (8x8 digits: 4x4 → 2x2; 28x28 MNIST: 14x14 → 7x7 → 2x2).
    """

    out_features = 256

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 256)."""
        return self.body(x)


def resolve_trunk(name: Trunk | str, image_shape: tuple[int, int, int]) -> Trunk:
    """``auto`` -> ``resnet18`` for inputs of 32x32 and larger, ``small_cnn`` below."""
    trunk = parse_option(Trunk, name, "policy.trunk")
    if trunk is Trunk.auto:
        return Trunk.resnet18 if min(image_shape[1:]) >= 32 else Trunk.small_cnn
    return trunk


def make_trunk(name: Trunk | str, image_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """Build a trunk (``auto``: :func:`resolve_trunk`) and return it with its feature width."""
    trunk = resolve_trunk(name, image_shape)
    c = image_shape[0]
    if trunk is Trunk.small_cnn:
        return SmallCnnTrunk(c), SmallCnnTrunk.out_features
    from learned_at.targets.models.resnet import resnet18

    net = resnet18(image_shape, 2)
    net.linear = nn.Identity()  # the 512-d average-pooled feature, as in the reference
    return net, 512


class StrategyNet(nn.Module):
    """Trunk plus one zero-initialised linear head per strategy grid.

    Args:
        image_shape: (C, H, W) of the inputs (clean images in [0, 1]).
        head_sizes: number of grid values per head, in the strategy space's head order.
        trunk: ``auto``, ``resnet18`` or ``small_cnn``.
    """

    def __init__(self, image_shape: tuple[int, int, int], head_sizes: list[int],
                 trunk: Trunk | str = Trunk.auto) -> None:
        super().__init__()
        self.trunk, width = make_trunk(trunk, image_shape)
        self.heads = nn.ModuleList(nn.Linear(width, n) for n in head_sizes)
        for head in self.heads:
            assert isinstance(head, nn.Linear)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Clean images (N, C, H, W) -> one logits tensor (N, G_h) per head."""
        feature = self.trunk(x)
        return [head(feature) for head in self.heads]
