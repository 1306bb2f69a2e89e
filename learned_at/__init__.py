"""learned-at's import package: ``learned_at.envs``, ``learned_at.agents``, ``learned_at.targets``
and ``learned_at.runners`` are the repository's top-level folders ``envs/``, ``agents/``,
``targets/`` and ``runners/``.

Every module imports the others through this package, never as top-level ``envs`` or
``runners``: those names are common, and a user's own ``envs`` package earlier on ``sys.path``
would otherwise shadow the project's (or, worse, mix with it). Installed (``pip install .``),
the folders are copied into this package (pyproject.toml: ``[tool.setuptools.package-dir]``).
In a source checkout, and in an editable install, the folders stay where they are and this
package's ``__path__`` also covers the repository root, so the same names resolve to them.
``python -m runners.cotrain`` from the repository root keeps working: the CLI modules hand
over to their ``learned_at.runners`` copy.
"""

from __future__ import annotations

import os as _os

SUBPACKAGES = ("envs", "agents", "targets", "runners")

_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "envs")) and all(
        _os.path.isfile(_os.path.join(_root, name, "__init__.py")) for name in SUBPACKAGES):
    __path__.append(_root)  # noqa: F821  (a package's module global)
