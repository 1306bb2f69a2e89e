"""Target data sets, on-device batch loading and classifier architectures."""
