"""Imports every built-in policy module so that each registers itself (one line per policy)."""

import agents.fixed  # noqa: F401
import agents.las_at  # noqa: F401
