"""A small CNN feature extractor for the PPO strategy learner, sized for 8x8 to 32x32 images.

SB3's ``NatureCNN`` fails on 32x32 inputs (8x8 stride-4 kernel) and is only used for uint8
image spaces; a float [0, 1] ``Box`` image would be flattened into an MLP instead
(docs/references.md §9.1). This extractor takes the strategy observation
``Dict{"image": (C, H, W) float in [0, 1], "features": (D,) float}`` (``features`` optional):
three 3x3 convolutions (stride 1, 2, 2), a global average pool, concatenation with the
per-sample features, and one linear layer.
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class SmallCnnExtractor(BaseFeaturesExtractor):
    """CNN over ``obs["image"]`` + the cheap per-sample ``obs["features"]``.

    Args:
        observation_space: ``Dict`` with an ``image`` Box (C, H, W) and optionally a
            ``features`` Box (D,).
        features_dim: size of the output features.
        channels: widths of the three convolutions.

    Shape:
        image: (N, C, H, W) float; features: (N, D). Returns (N, features_dim).
    """

    def __init__(self, observation_space: spaces.Dict, features_dim: int = 64,
                 channels: tuple[int, int, int] = (16, 32, 32)) -> None:
        super().__init__(observation_space, features_dim)
        if (not isinstance(observation_space, spaces.Dict)
                or "image" not in observation_space.spaces):
            raise ValueError("SmallCnnExtractor needs a Dict observation space with an 'image' "
                             f"Box (C, H, W); got {observation_space}")
        image_shape = observation_space["image"].shape
        assert image_shape is not None  # a Box
        c = image_shape[0]
        c1, c2, c3 = channels
        self.cnn = nn.Sequential(
            nn.Conv2d(c, c1, 3, 1, 1), nn.ReLU(), nn.Conv2d(c1, c2, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        features_shape = (observation_space["features"].shape
                          if "features" in observation_space.spaces else (0,))
        assert features_shape is not None  # a Box
        self.n_features = features_shape[0]
        self.head = nn.Sequential(nn.Linear(c3 + self.n_features, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.cnn(observations["image"])
        if self.n_features:
            h = torch.cat([h, observations["features"]], 1)
        return self.head(h)
