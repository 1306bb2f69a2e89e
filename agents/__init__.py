"""Policies acting on the attack environment, and how each one learns."""
