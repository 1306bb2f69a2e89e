"""Imports every built-in policy module so that each registers itself (one line per policy)."""

import agents.fixed  # noqa: F401
import agents.dynamic  # noqa: F401
import agents.curriculum  # noqa: F401
import agents.fgsm_sdi  # noqa: F401
import agents.fgsm_pgi  # noqa: F401
import agents.ppo_strategy  # noqa: F401
import agents.las_at  # noqa: F401
