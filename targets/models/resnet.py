"""CIFAR ResNet-18 and PreAct ResNet-18 (3x3 stride-1 stem, [2, 2, 2, 2] blocks, 64-512).

Inputs float (B, C, H, W) in [0, 1]; outputs logits (B, K). Global average pooling is
adaptive, so any H, W works (32x32 is the natural size: final feature map 4x4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus (projected) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut (projected from the activated input)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class ResNet(nn.Module):
    """CIFAR ResNet with four stages of two blocks each.

    Args:
        block: :class:`BasicBlock` or :class:`PreActBlock`.
        in_channels: C of the input images.
        num_classes: K.
        preact: pre-activation variant (no BN after the stem; BN-ReLU before pooling).
    """

    def __init__(self, block: type[BasicBlock] | type[PreActBlock], in_channels: int,
                 num_classes: int, preact: bool) -> None:
        super().__init__()
        stem: list[nn.Module] = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)]
        if not preact:
            stem += [nn.BatchNorm2d(64), nn.ReLU()]
        self.stem = nn.Sequential(*stem)
        blocks: list[nn.Module] = []
        c_in = 64
        for i, width in enumerate(_WIDTHS):
            for j in range(2):
                blocks.append(block(c_in, width, 2 if (i > 0 and j == 0) else 1))
                c_in = width
        self.layers = nn.Sequential(*blocks)
        self.head_act = nn.Sequential(nn.BatchNorm2d(512), nn.ReLU()) if preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, C, H, W) in [0, 1] -> logits (B, K)."""
        out = self.head_act(self.layers(self.stem(x)))
        return self.linear(self.pool(out).flatten(1))


def resnet18(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """CIFAR ResNet-18 (BasicBlock [2, 2, 2, 2])."""
    return ResNet(BasicBlock, image_shape[0], num_classes, preact=False)


def preact_resnet18(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """CIFAR PreAct ResNet-18 (PreActBlock [2, 2, 2, 2], final BN-ReLU before pooling)."""
    return ResNet(PreActBlock, image_shape[0], num_classes, preact=True)
