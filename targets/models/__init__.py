"""Model registry: ``make_model(name, image_shape, num_classes)``.

Every model takes float (B, C, H, W) inputs in [0, 1] and returns logits (B, K). Input
normalisation, when wanted, is a layer inside the model (:class:`Normalize`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from learned_at.targets.models.normalize import Normalize
from learned_at.targets.models.resnet import preact_resnet18, resnet18
from learned_at.targets.models.small_cnn import cifar_cnn, digits_cnn, mnist_cnn, mnist_small
from learned_at.targets.models.wide_resnet import wrn34_10

__all__ = ["MODELS", "Normalize", "make_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "digits_cnn": digits_cnn,
    "mnist_cnn": mnist_cnn,
    "mnist_small": mnist_small,
    "cifar_cnn": cifar_cnn,
    "resnet18": resnet18,
    "preact_resnet18": preact_resnet18,
    "wrn34_10": wrn34_10,
}


def make_model(name: str, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build a registered model.

    Args:
        name: a key of :data:`MODELS`.
        image_shape: (C, H, W) of the inputs.
        num_classes: K >= 2.

    Returns:
        A freshly initialised ``nn.Module`` mapping (B, C, H, W) in [0, 1] to logits (B, K).

    Raises:
        ValueError: unknown name, malformed ``image_shape`` / ``num_classes``, or an image
            size the model cannot handle.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return MODELS[name](tuple(int(s) for s in image_shape), int(num_classes))
