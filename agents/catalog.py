"""Imports every built-in policy module so that each registers itself (one line per policy)."""

import agents.fixed  # noqa: F401
import agents.dynamic  # noqa: F401
import agents.curriculum  # noqa: F401
import agents.fgsm_sdi.policy  # noqa: F401
import agents.fgsm_pgi.policy  # noqa: F401
import agents.ppo.policy  # noqa: F401
import agents.las_at.policy  # noqa: F401
import agents.spgd_at  # noqa: F401
