"""The project's reads of an MLflow store: a run by id, the tags of the source checkout, and a
config as flat params.

:func:`get_run` turns MLflow's error for an unknown run id into one line
(:class:`UnknownRunError`, a usage error of every command; a refused login or permission, or a
server that does not answer, is said as such: runners/tracking_errors.py); :func:`source_tags` records the
git commit, branch and dirty flag of the code that ran; :func:`flatten_config` writes a nested
config as MLflow params.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

__all__ = ["MAX_PARAM_VALUE_LENGTH", "UnknownRunError", "flatten_config", "get_run",
           "source_tags"]

MAX_PARAM_VALUE_LENGTH = 6000
"""MLflow's limit on the length of a param value."""


class UnknownRunError(ValueError):
    """A run id that names no run of the tracking store."""


def get_run(client: MlflowClient, run_id: str) -> Any:
    """``client.get_run(run_id)``, or an :class:`UnknownRunError` with a one-line message (a
    refused or unanswered request: :class:`~runners.tracking_errors.TrackingAccessError`)."""
    from learned_at.runners.tracking_errors import tracking_access_error

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        access = tracking_access_error(exc, client.tracking_uri, f"reading run {run_id}")
        if access is not None:
            raise access from exc
        first = (exc.message or str(exc)).strip().splitlines()[0]
        raise UnknownRunError(
            f"no MLflow run {run_id!r} at tracking URI {client.tracking_uri!r} ({first}); check "
            "the run id (python -m runners.compare experiment=<name> lists runs) and "
            "MLFLOW_TRACKING_URI / tracking_uri=") from None


def source_tags(path: str | os.PathLike | None = None) -> dict[str, str]:
    """Git commit, branch, remote and dirty flag of the repository holding ``path`` (default:
    this project's source), as run tags; ``{}`` outside a git checkout.

    ``git.dirty`` is ``true`` when tracked files differ from the commit (untracked files do
    not count), i.e. when the commit alone does not reproduce the code that ran.
    """
    try:
        import git

        repo = git.Repo(path or Path(__file__).resolve().parent, search_parent_directories=True)
        tags = {"mlflow.source.git.commit": repo.head.commit.hexsha,
                "git.dirty": str(repo.is_dirty(untracked_files=False)).lower()}
        if not repo.head.is_detached:
            tags["mlflow.source.git.branch"] = repo.active_branch.name
        if repo.remotes:
            tags["mlflow.source.git.repoURL"] = next(iter(repo.remotes[0].urls), "")
        return tags
    except Exception:  # no git, not a checkout, a bare clone: no source tags
        return {}


def flatten_config(cfg: Mapping, prefix: str = "") -> dict[str, str]:
    """Flattens a nested mapping into dotted keys with string values.

    Args:
        cfg: Nested mapping (plain dicts, or any ``Mapping`` such as an OmegaConf ``DictConfig``).
        prefix: Prefix for every key (without the trailing dot).

    Returns:
        ``{"a.b.c": "value"}``; lists appear as their repr, an empty nested mapping as ``"{}"``,
        and values longer than 6000 characters (MLflow's limit) are truncated, ending in ``...``.
        ``None`` values (a field left to its preset) are left out, not logged as "None".
    """
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping) and len(value) > 0:
            out.update(flatten_config(value, name))
            continue
        text = "{}" if isinstance(value, Mapping) else str(value)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
        out[name] = text
    return out
