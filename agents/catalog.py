"""Imports every built-in policy module so that each registers itself (one line per policy)."""

import learned_at.agents.fixed  # noqa: F401
import learned_at.agents.dynamic  # noqa: F401
import learned_at.agents.curriculum  # noqa: F401
import learned_at.agents.fgsm_sdi.policy  # noqa: F401
import learned_at.agents.fgsm_pgi.policy  # noqa: F401
import learned_at.agents.ppo.policy  # noqa: F401
import learned_at.agents.las_at.policy  # noqa: F401
import learned_at.agents.spgd_at  # noqa: F401
import learned_at.agents.n_fgsm  # noqa: F401
