"""``resume=<run id>``: continue a run from its last checkpoint, exactly, with its own config.

The run is rebuilt from its own command line (stored in the checkpoint) followed by the one
given now. A setting given now that equals the run's own value is accepted silently (a user
who re-runs their command with ``resume=`` added), one that differs is refused with one line
naming both values — except the settings of where and how the run continues
(:data:`RESUME_FIELDS`: epochs, progress, device, threads, checkpoint_dir,
checkpoint_every_s, tracking.*). ``epochs=N`` re-plans the run to N epochs (N at least the
epochs it has started), also a finished one: every schedule that depends on the run's length
is re-derived for N epochs from the current step on (the epochs already trained keep the old
one); the run is tagged ``epochs_replanned``. A finished run resumed without a new ``epochs=``
is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from learned_at.runners.checkpoint import Position, load_checkpoint, restore_run
from learned_at.runners.compose import compose_config
from learned_at.runners.config import ConfigError, CotrainConfig, config_to_dict
from learned_at.runners.presets import resolve_config
from learned_at.runners.run import Run, build_run
from learned_at.runners.run_loading import find_checkpoint
from learned_at.runners.run_store import get_run

__all__ = ["RESUME_FIELDS", "Resumed", "checkpoint_folder", "resume_id", "resume_run"]

RESUME_FIELDS = ("resume", "epochs", "progress", "device", "threads", "checkpoint_dir",
                 "checkpoint_every_s", "tracking")
"""Top-level fields (or groups) a resume may change."""
_MACHINE = ("progress=", "device=", "threads=")  # may differ wherever the run continues


@dataclass(frozen=True)
class Resumed:
    """A run rebuilt from its checkpoint, ready to continue.

    Attributes:
        run_id: the MLflow run it continues.
        run: the rebuilt run.
        position: where it continues.
        replanned: ``"<old>-><new>"`` epochs when ``epochs=`` changed its length, else "".
        unlogged: the record of an epoch the tracking server did not take before the run
            stopped (``{"epoch", "plot", "metrics"}``), or None.
    """

    run_id: str
    run: Run
    position: Position
    replanned: str = ""
    unlogged: dict[str, Any] | None = None


def resume_id(overrides: Sequence[str]) -> str:
    """The run id of a ``resume=<id>`` among ``overrides`` ("" when there is none)."""
    ids = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "resume"]
    return ids[-1] if ids and ids[-1] not in ("", "null", "''") else ""


def resume_run(overrides: Sequence[str], tracking_uri: str | None = None) -> Resumed:
    """Rebuild the run named by ``resume=<id>`` in ``overrides`` with the other settings given
    there (module docstring); the command line is composed on top of the run's own, so it
    may name fields of the run's groups without naming the groups.

    Args:
        overrides: the command line that asked for the resume.
        tracking_uri: the MLflow store that holds the run.
    """
    from mlflow import MlflowClient

    run_id = resume_id(overrides)
    status = get_run(MlflowClient(tracking_uri), run_id).info.status
    state = load_checkpoint(find_checkpoint(run_id, checkpoint_folder(overrides), tracking_uri))
    saved = [o for o in state.get("overrides", []) if not o.startswith("resume=")]
    given = [o for o in overrides if not o.startswith("resume=")]
    merged = dataclasses.replace(compose_config([*saved, *given]), resume=run_id)
    _refuse_changes(config_to_dict(compose_config(saved)), config_to_dict(merged), run_id)
    planned = resolve_config(compose_config(saved)).epochs
    epochs = resolve_config(merged).epochs
    started = state["epoch"] + (1 if state.get("batch", 0) else 0)
    if status == "FINISHED" and epochs == planned:
        raise ConfigError(f"run {run_id} finished its {planned} epochs; resume={run_id} "
                          f"epochs=N (N > {planned}) extends it")
    if epochs is None or epochs < started:
        raise ConfigError(f"epochs={epochs}: run {run_id} has already started {started} "
                          f"epochs; accepted epochs >= {started}")
    kept = [o for o in [*saved, *given] if not o.startswith(_MACHINE)]
    run = build_run(merged, kept)
    position = restore_run(run, state)
    return Resumed(run_id, run, position, f"{planned}->{epochs}" if epochs != planned else "",
                   state.get("unlogged"))


def checkpoint_folder(overrides: Sequence[str]) -> str:
    """The ``checkpoint_dir=`` among ``overrides`` (the last one), else the default."""
    folders = [o.split("=", 1)[1] for o in overrides if o.startswith("checkpoint_dir=")]
    return folders[-1] if folders else CotrainConfig.checkpoint_dir


def _refuse_changes(own: Mapping[str, Any], now: Mapping[str, Any], run_id: str) -> None:
    """Raise when a setting other than :data:`RESUME_FIELDS` differs from the run's own."""
    changed = [(k, a, b) for k, a, b in _differences(own, now)
               if k.split(".", 1)[0] not in RESUME_FIELDS]
    if changed:
        key, was, given = changed[0]
        raise ConfigError(
            f"resume={run_id} continues the run with its own config; {key}={_text(given)} "
            f"differs from the run's {key}={_text(was)} (with resume= only "
            f"{', '.join(RESUME_FIELDS[1:])} may change); start a new run to change the config")


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = ""
                 ) -> list[tuple[str, Any, Any]]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb, name = a.get(key), b.get(key), f"{prefix}{key}"
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _differences(va, vb, f"{name}.")
        elif va != vb:
            out.append((name, va, vb))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)
