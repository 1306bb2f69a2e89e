"""FGSM-SDI's initialisation generator: conv → one residual block → conv, output ε·tanh.

Architecture of the reference ``One_Layer_Attacker`` (docs/references.md §2.2): the input is the
clean image concatenated with the sign of the target's input gradient at the clean point
(2C channels: 6 for RGB, 2 for grey); the output is an L∞ map in [−ε, ε].
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """x + c2(PReLU(BN(c1(PReLU(BN(x)))))) with non-affine BatchNorm and identity shortcut.

    The convolutions have biases and Xavier-uniform weights with gain √2, as in the reference.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(width, affine=False)
        self.act1 = nn.PReLU()
        self.c1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width, affine=False)
        self.act2 = nn.PReLU()
        self.c2 = nn.Conv2d(width, width, 3, padding=1)
        for conv in (self.c1, self.c2):
            nn.init.xavier_uniform_(conv.weight, gain=math.sqrt(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, width, H, W) -> (N, width, H, W)."""
        return x + self.c2(self.act2(self.bn2(self.c1(self.act1(self.bn1(x))))))


class InitGenerator(nn.Module):
    """Maps (image, sign of clean gradient) to an initial perturbation η with ‖η‖∞ ≤ ε.

    Args:
        channels: C of the images (the input has 2C channels).
        width: hidden channels (64 in the reference).
    """

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(2 * channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width, eps=1e-3), nn.ReLU())
        self.block = ResidualBlock(width)
        self.norm = nn.BatchNorm2d(width, affine=False)
        self.tail = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, grad_sign: torch.Tensor,
                eps: float | torch.Tensor) -> torch.Tensor:
        """Initial perturbation ε·tanh(G([x, sign g])).

        Shape:
            x: (N, C, H, W) in [0, 1]; grad_sign: (N, C, H, W) in {−1, 0, 1}; eps: float or
            (N,). Returns η (N, C, H, W) with |η| ≤ ε elementwise (strictly inside the ball).
        """
        h = self.tail(self.norm(self.block(self.head(torch.cat([x, grad_sign], 1)))))
        e = eps.view(-1, 1, 1, 1) if torch.is_tensor(eps) else eps
        return torch.tanh(h) * e
