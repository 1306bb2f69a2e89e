"""WideResNet-34-10 as used by Madry et al. / TRADES for CIFAR (dropout 0).

Inputs float (B, C, H, W) in [0, 1]; outputs logits (B, K). Pooling is adaptive (the
original uses AvgPool 8 on the 8x8 map of a 32x32 input, which is the same there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WideBasicBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut.

    When the width changes, the shortcut is a 1x1 conv of the activated input (as in the
    reference implementation); otherwise it is the identity on the raw input.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.equal_in_out = c_in == c_out
        self.shortcut = None if self.equal_in_out else nn.Conv2d(c_in, c_out, 1, stride,
                                                                 bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    """WideResNet of the given depth (6n + 4) and widen factor.

    Args:
        depth: total depth, (depth - 4) must be divisible by 6.
        widen: width multiplier k; stage widths 16k, 32k, 64k after a 16-channel stem.
        in_channels: C of the input images.
        num_classes: K.
    """

    def __init__(self, depth: int, widen: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for stage, width in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(WideBasicBlock(c_in, width, 2 if (stage > 0 and j == 0) else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, C, H, W) in [0, 1] -> logits (B, K)."""
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(self.pool(out).flatten(1))


def wrn34_10(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """WideResNet-34-10 (5 blocks per stage, widths 160/320/640), dropout 0."""
    return WideResNet(34, 10, image_shape[0], num_classes)
