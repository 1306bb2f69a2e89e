"""Evaluation attacks of the sparse (L0) threat: sPGD, Sparse-RS and Sparse-AutoAttack."""
