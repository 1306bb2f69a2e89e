"""Imports every built-in AT-loss module so that each registers itself (one line each)."""

import learned_at.targets.losses.ce  # noqa: F401
import learned_at.targets.losses.trades  # noqa: F401
import learned_at.targets.losses.awp  # noqa: F401
import learned_at.targets.losses.pgi  # noqa: F401
import learned_at.targets.losses.fast_bat  # noqa: F401
import learned_at.targets.losses.tradeoff  # noqa: F401
