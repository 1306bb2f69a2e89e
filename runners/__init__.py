"""Run infrastructure: MLflow tracking, policy-choice distributions, plots, checkpoints, inspection."""
