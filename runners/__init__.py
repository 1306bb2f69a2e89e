"""Run infrastructure: MLflow tracking, policy-choice distributions, plots, checkpoints, inspection."""

from learned_at.runners.threads import default_wait_policy

default_wait_policy()  # before torch loads OpenMP: idle workers sleep instead of spinning
