"""The attack environment: threat models, attack objectives, the batched env and reference PGD."""
