"""Imports every built-in AT-loss module so that each registers itself (one line each)."""

import targets.losses.ce  # noqa: F401
import targets.losses.trades  # noqa: F401
import targets.losses.awp  # noqa: F401
import targets.losses.pgi  # noqa: F401
import targets.losses.fast_bat  # noqa: F401
