"""Imports every built-in geometry module so that each registers itself (one line each)."""

import envs.geometry.linf  # noqa: F401
import envs.geometry.l2  # noqa: F401
import envs.geometry.l0  # noqa: F401
