"""AT losses (ce, trades, awp, pgi, ...): the protocol, one module per loss, and the registry."""

from learned_at.targets.losses.base import (ATLoss, ATLossConfig, ATLossOutput, at_loss_registry,
                                            make_at_loss, register_at_loss, smoothed_targets,
                                            soft_cross_entropy)

__all__ = ["ATLoss", "ATLossConfig", "ATLossOutput", "at_loss_registry", "make_at_loss",
           "register_at_loss", "smoothed_targets", "soft_cross_entropy"]
