"""Imports AT-loss modules beyond the built-in CE and TRADES so that each registers itself."""

import targets.pgi_loss  # noqa: F401
import targets.awp  # noqa: F401
