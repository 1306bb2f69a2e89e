"""Imports every built-in geometry module so that each registers itself (one line each)."""

import learned_at.envs.geometry.linf  # noqa: F401
import learned_at.envs.geometry.l2  # noqa: F401
import learned_at.envs.geometry.l0  # noqa: F401
