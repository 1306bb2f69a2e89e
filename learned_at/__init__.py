"""learned-at's import package: ``learned_at.envs``, ``learned_at.agents``, ``learned_at.targets``
and ``learned_at.runners``.

The code lives in the repository's top-level folders ``envs/``, ``agents/``, ``targets/`` and
``runners/``; this package holds a symbolic link to each, so the same import names resolve the
same way everywhere, with no import hook: in a source checkout (the repository root on
``sys.path``, as ``pip install -e .`` and pytest put it), in an installed wheel (the build copies
the folders into the package) and for static tools (type checkers, import-graph tools) that
read the checkout. Every module imports the others through this package, never as top-level
``envs`` or ``runners``: those names are common, and a user's own ``envs`` package earlier on
``sys.path`` would otherwise shadow the project's (or, worse, mix with it).
"""

from __future__ import annotations

SUBPACKAGES = ("envs", "agents", "targets", "runners")
