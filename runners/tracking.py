"""One MLflow run behind a small, sync-free logging interface.

:class:`Tracker` opens its run with MLflow's public ``mlflow.start_run`` (a new run, a
resumed one, or a run nested under a parent), so everything MLflow attaches to a run — the
source, the user and the git commit, the system metrics (``system/*``: CPU, memory, disk,
network; GPU with nvidia-ml-py), and the logged model — belongs to that run and its
experiment; :meth:`Tracker.finish` ends it (``mlflow.end_run``). While it is open, the run is
written through an explicit :class:`mlflow.MlflowClient` and its run id: metric values,
including 0-dim tensors still on an accelerator, are buffered as they are, and
:meth:`Tracker.flush` is the only place they reach the host (one transfer per device) and
MLflow (``log_batch`` in chunks of at most 1000 metrics).

A new run also carries the project's own git commit, branch and a ``git.dirty`` flag
(uncommitted changes in tracked files). Experiments are created as model-training experiments
(tag ``mlflow.experimentKind=custom_model_development``), so MLflow 3's UI opens them in its
training view rather than its GenAI view.

Non-finite values: MLflow 3.17 accepts them (measured on the sqlite store: NaN is stored as
NaN, ±inf is clamped to ±1.797e308), so they are logged as they are.

A refused or unanswered request (a missing login or permission, a server down for longer than
MLflow's own retries: runners/tracking_errors.py) raises a one-line
:class:`~runners.tracking_errors.TrackingAccessError`. After a server did not answer, the
tracker makes no further requests (each would wait through the retries again): later calls
raise the same error at once, and :meth:`Tracker.finish` only closes the run in this process
(MLflow keeps it ``RUNNING`` until a resume continues it).

The final model is an exported program (``torch.export``, MLflow's ``pt2`` format) with a
dynamic batch dimension: loading it unpickles nothing and needs no code of this project
(:meth:`Tracker.log_model`).
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal, NamedTuple

import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from learned_at.runners.host_values import host_values
from learned_at.runners.run_store import flatten_config, get_run, source_tags
from learned_at.runners.tracking_errors import (TrackingUnavailableError, explained_requests)

__all__ = ["ParamConflictError", "Tracker"]

_log = logging.getLogger(__name__)

PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3's value for a model-training experiment (its other kind is ``genai_development``)."""
PARENT_TAG = "mlflow.parentRunId"


class ParamConflictError(ValueError):
    """A param was logged before with a different value (MLflow params are immutable)."""


class _Entry(NamedTuple):
    key: str
    value: torch.Tensor | float
    step: int
    timestamp: int


class Tracker:
    """One MLflow run: buffered metrics, params, tags and artifacts.

    Use as a context manager: on exit the buffer is flushed and the run is terminated as
    ``FINISHED``, ``KILLED`` (``KeyboardInterrupt``) or ``FAILED`` (any other exception, which
    is re-raised).

    Args:
        experiment: Experiment name; created if missing (ignored when ``run_id`` is given).
        run_id: Re-open this run (resume): its status is set to ``RUNNING`` again.
        run_name: Name of a new run.
        tags: Tags set on the run (on resume too).
        tracking_uri: MLflow tracking URI; ``None`` uses MLflow's default (which honours
            ``MLFLOW_TRACKING_URI``).
        parent_run_id: Make the new run a nested run of this one (``mlflow.parentRunId``).
        system_metrics: Run MLflow's system-metrics monitor while the run is open.
        system_metrics_interval_s: Seconds between two system-metric samples.

    Raises:
        UnknownRunError: ``run_id`` (or ``parent_run_id``) does not name a run of this store.
    """

    max_buffer: int = 2000
    """The buffer is flushed automatically once it holds more values than this."""

    def __init__(
        self,
        experiment: str = "learned-at",
        *,
        run_id: str | None = None,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        tracking_uri: str | None = None,
        parent_run_id: str | None = None,
        system_metrics: bool = False,
        system_metrics_interval_s: float = 10.0,
    ) -> None:
        import mlflow

        if tracking_uri is not None:
            mlflow.set_tracking_uri(tracking_uri)
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self.unreachable: TrackingUnavailableError | None = None
        """Set once the server did not answer: no further requests are made."""
        doing = f"opening run {run_id}" if run_id else f"writing to experiment {experiment!r}"
        with explained_requests(self._client.tracking_uri, doing):
            self._open(experiment, run_id, run_name, tags, parent_run_id, system_metrics,
                       system_metrics_interval_s)

    def _open(self, experiment: str, run_id: str | None, run_name: str | None,
              tags: dict[str, str] | None, parent_run_id: str | None, system_metrics: bool,
              system_metrics_interval_s: float) -> None:
        """Start (or re-open) the run (see the class docstring)."""
        import mlflow

        if system_metrics:
            mlflow.set_system_metrics_sampling_interval(system_metrics_interval_s)
        if run_id is not None:
            get_run(self._client, run_id)
            experiment_id = None
        elif parent_run_id is not None:
            experiment_id = get_run(self._client, parent_run_id).info.experiment_id
        else:
            experiment_id = self._experiment_id(experiment)
        try:
            active = mlflow.start_run(
                run_id=run_id, experiment_id=experiment_id, run_name=run_name,
                parent_run_id=parent_run_id,
                tags={**(source_tags() if run_id is None else {}), **(tags or {})},
                log_system_metrics=system_metrics)
        except Exception as exc:  # psutil missing for system metrics: train anyway
            if not system_metrics:
                raise
            _log.warning("system metrics are off: %s", exc)
            active = mlflow.start_run(run_id=run_id, experiment_id=experiment_id,
                                      run_name=run_name, parent_run_id=parent_run_id,
                                      tags=tags, log_system_metrics=False)
        try:
            if run_id is not None and run_name:
                self._client.update_run(run_id, name=run_name)
            run = self._client.get_run(active.info.run_id)
        except BaseException:  # e.g. refused: the run must not stay active in this process
            _forget_active_run(active.info.run_id)
            raise
        self._run_id: str = run.info.run_id
        self._experiment_id_value: str = run.info.experiment_id
        self._params: dict[str, str] = dict(run.data.params)
        self._buffer: list[_Entry] = []
        self._latest: dict[str, float] = {}
        self._finished = False

    def _experiment_id(self, name: str) -> str:
        """The experiment's id; a new one is created as a model-training experiment."""
        experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self._client.create_experiment(
                    name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except MlflowException:  # created concurrently by another process
                experiment = self._client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            self._client.restore_experiment(experiment.experiment_id)
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # created before, or by someone else
            self._client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                            EXPERIMENT_KIND)
        return experiment.experiment_id

    @contextmanager
    def _requests(self, doing: str = "") -> Iterator[None]:
        """Requests in the block: refusals and outages as one-line errors; after an outage,
        none at all (module docstring)."""
        if self.unreachable is not None:
            raise self.unreachable
        try:
            with explained_requests(self.tracking_uri, doing or f"writing run {self._run_id}"):
                yield
        except TrackingUnavailableError as error:
            self.unreachable = error
            raise

    # ----------------------------------------------------------------------------- properties

    @property
    def run_id(self) -> str:
        """The MLflow run id."""
        return self._run_id

    @property
    def experiment_id(self) -> str:
        """The id of the run's experiment."""
        return self._experiment_id_value

    @property
    def client(self) -> MlflowClient:
        """The client bound to the run's tracking store."""
        return self._client

    @property
    def tracking_uri(self) -> str:
        """The tracking URI in use."""
        return self._client.tracking_uri

    # --------------------------------------------------------------------------------- params

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Logs params (nested mappings are flattened to dotted keys), 100 per request.

        Keys already logged with the same value are skipped, so re-logging the config of a
        resumed run is fine.

        Args:
            params: Flat or nested mapping of params.

        Raises:
            ParamConflictError: A key was logged before with a different value.
        """
        flat = flatten_config(params)
        new: dict[str, str] = {}
        for key, value in flat.items():
            old = self._params.get(key)
            if old is None:
                new[key] = value
            elif old != value:
                raise ParamConflictError(
                    f"param {key!r} of run {self._run_id} was logged as {old!r}, now {value!r}; "
                    "MLflow params cannot change. Resume with the original setting or start a "
                    "new run."
                )
        items = [Param(key, value) for key, value in new.items()]
        with self._requests():
            for start in range(0, len(items), PARAMS_PER_BATCH):
                self._client.log_batch(self._run_id,
                                       params=items[start : start + PARAMS_PER_BATCH])
        self._params.update(new)

    # -------------------------------------------------------------------------------- metrics

    def log_metrics(self, metrics: Mapping[str, float | int | torch.Tensor], step: int) -> None:
        """Buffers metric values; never synchronises the device.

        Tensors (one element, any device) are kept as they are (detached) until :meth:`flush`.
        The buffer is flushed automatically once it exceeds :attr:`max_buffer` values.

        Args:
            metrics: ``{"component/metric": value}``.
            step: Step of all values.

        Raises:
            ValueError: A tensor has more than one element.
            TypeError: A value is neither a real number nor a tensor.
        """
        timestamp = time.time_ns() // 1_000_000
        for key, value in metrics.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ValueError(
                        f"metric {key!r}: expected a tensor with one element, got shape "
                        f"{tuple(value.shape)}"
                    )
                entry_value: torch.Tensor | float = value.detach().reshape(())
            elif isinstance(value, numbers.Real):
                entry_value = float(value)
            else:
                raise TypeError(f"metric {key!r}: unsupported value type {type(value).__name__}")
            self._buffer.append(_Entry(key, entry_value, int(step), timestamp))
        if len(self._buffer) > self.max_buffer:
            self.flush()

    @property
    def pending(self) -> int:
        """Number of buffered values not yet sent."""
        return len(self._buffer)

    def flush(self) -> None:
        """Moves buffered values to the host (one transfer per device) and sends them to MLflow;
        values that could not be sent stay buffered."""
        if not self._buffer:
            return
        entries, self._buffer = self._buffer, []
        values = host_values([entry.value for entry in entries])
        metrics = [
            Metric(entry.key, value, entry.timestamp, entry.step)
            for entry, value in zip(entries, values)
        ]
        sent = 0
        try:
            with self._requests():
                for start in range(0, len(metrics), METRICS_PER_BATCH):
                    chunk = metrics[start : start + METRICS_PER_BATCH]
                    self._client.log_batch(self._run_id, metrics=chunk)
                    sent += len(chunk)
        finally:
            self._buffer = [entry._replace(value=value) for entry, value
                            in zip(entries[sent:], values[sent:])] + self._buffer
        for entry, value in zip(entries, values):
            self._latest[entry.key] = value

    def latest(self, key: str) -> float | None:
        """The last flushed value of ``key`` (``None`` if none was flushed yet)."""
        return self._latest.get(key)

    def has_metric_at(self, key: str, step: int) -> bool:
        """Whether the run already holds a value of ``key`` at ``step`` (flushed or buffered);
        a resumed run uses it to never log the same point twice."""
        if any(e.key == key and e.step == step for e in self._buffer):
            return True
        with self._requests():
            history = self._client.get_metric_history(self._run_id, key)
        return any(m.step == step for m in history)

    # --------------------------------------------------------------------- tags and artifacts

    def set_tag(self, key: str, value: Any) -> None:
        """Sets a run tag."""
        with self._requests():
            self._client.set_tag(self._run_id, key, str(value))

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Writes a JSON (``.json``) or YAML (``.yaml``/``.yml``) artifact."""
        with self._requests():
            self._client.log_dict(self._run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Writes a text artifact."""
        with self._requests():
            self._client.log_text(self._run_id, text, artifact_file)

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        """Writes a matplotlib figure as an image artifact and closes the figure."""
        try:
            with self._requests():
                self._client.log_figure(self._run_id, fig, artifact_file)
        finally:
            from matplotlib import pyplot as plt

            plt.close(fig)

    def log_table(self, table: Any, artifact_file: str) -> None:
        """Writes a table artifact (``.json``), replacing an earlier one of the same name.

        The file has the format of :meth:`mlflow.MlflowClient.log_table` (pandas
        ``orient="split"``) and the run is tagged so that MLflow's UI shows it as a table;
        ``mlflow.load_table(artifact_file, run_ids=[...], extra_columns=["run_id"])`` reads it
        across runs into one DataFrame. Unlike ``log_table``, which appends by downloading,
        concatenating and re-uploading, the whole table is written each time (callers keep it).

        Args:
            table: a pandas DataFrame or a dict of equal-length columns.
            artifact_file: run-relative path ending in ``.json``.
        """
        import pandas as pd

        if not artifact_file.endswith(".json"):
            raise ValueError(f"table artifacts end in .json, got {artifact_file!r}")
        frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
        folder, name = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory() as tmp, self._requests():
            local = os.path.join(tmp, name)
            frame.to_json(local, orient="split", index=False, date_format="iso")
            self._client.log_artifact(self._run_id, local, folder or None)
            tags = self._client.get_run(self._run_id).data.tags
            entries = json.loads(tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
            entry = {"path": artifact_file, "type": "table"}
            if entry not in entries:
                self._client.set_tag(self._run_id, LOGGED_ARTIFACTS_TAG,
                                     json.dumps([*entries, entry]))

    def log_model(self, model: torch.nn.Module, input_example: torch.Tensor, name: str = "model",
                  registered_model_name: str | None = None, step: int = 0) -> str:
        """Logs a PyTorch model as an MLflow model of this run (the experiment's Models tab).

        The model is saved with ``mlflow.pytorch`` as an exported program (``torch.export``,
        ``serialization_format="pt2"``): a graph in JSON and the weights as raw tensor bytes, so
        ``mlflow.pytorch.load_model("models:/<model id>")`` / ``("runs:/<run id>/<name>")`` and
        ``mlflow.pyfunc.load_model(...)`` unpickle nothing (only the stored example input goes
        through ``torch.load(weights_only=True)``) and need no code of this project. The batch
        dimension is dynamic: MLflow marks the signature's ``-1`` dimensions ``Dim.AUTO``, which
        stays dynamic only for an example batch of at least 2 (so pass two or more). The
        signature is inferred from ``input_example``; ``pip_requirements`` are given (MLflow's
        requirement inference costs seconds).

        Args:
            model: the network, on the CPU and in eval mode (what a user loads back).
            input_example: an input batch of at least 2, e.g. (2, C, H, W) float32 in [0, 1].
            name: the logged model's name.
            registered_model_name: also register it under this name (a new version).
            step: the step the model belongs to (the run's epochs).

        Returns:
            The model URI (``models:/<model id>``).
        """
        import mlflow.pytorch

        if input_example.shape[0] < 2:
            raise ValueError("log_model needs an input example of at least 2 samples (a batch "
                             "of 1 would export a fixed batch size)")
        example = input_example.detach().to("cpu", torch.float32).numpy()
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={_mlflow_version()}"]
        with self._requests(f"logging model {name!r} of run {self._run_id}"):
            # into the active run (this one): its experiment lists the model
            info = mlflow.pytorch.log_model(
                model, name=name, input_example=example, pip_requirements=requirements,
                serialization_format="pt2", registered_model_name=registered_model_name,
                step=step)
        return info.model_uri

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Uploads a local file into the artifact folder ``artifact_path`` (root if ``None``)."""
        with self._requests():
            self._client.log_artifact(self._run_id, os.fspath(local_path), artifact_path)

    def download_artifact(self, artifact_path: str, dst_dir: str | os.PathLike) -> str:
        """Downloads an artifact (file or folder) of the run.

        Returns:
            Local path of the downloaded artifact.
        """
        os.makedirs(dst_dir, exist_ok=True)
        with self._requests():
            return self._client.download_artifacts(self._run_id, artifact_path,
                                                   os.fspath(dst_dir))

    # ------------------------------------------------------------------------------ lifecycle

    def finish(self, status: str = "FINISHED") -> None:
        """Flushes and ends the run with ``status`` (FINISHED, FAILED or KILLED); a failed
        flush still ends the run (as FAILED) and is raised. After the server did not answer,
        the run is only closed in this process (module docstring)."""
        if self._finished:
            return
        if self.unreachable is not None:
            self.abandon()
            return
        try:
            self.flush()
        except BaseException:
            status = "FAILED"
            raise
        finally:
            self._end(status)

    def abandon(self) -> None:
        """Close the run in this process only, sending nothing (after a refusal or an outage,
        or when another process took the run over); buffered values are dropped."""
        self._buffer = []
        self._finished = True
        _forget_active_run(self._run_id)

    def _end(self, status: str) -> None:
        import mlflow

        self._finished = True
        if self.unreachable is not None:
            _forget_active_run(self._run_id)
            return
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self._run_id:
            mlflow.end_run(status)  # stops MLflow's system-metrics monitor too
        else:  # pragma: no cover - the run is no longer the active one (another thread)
            self._client.set_terminated(self._run_id, status)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc_type is None:
            self.finish("FINISHED")
            return False
        try:
            self.flush()
        except Exception:  # keep the original exception; the run is failing anyway
            _log.warning("flushing metrics of run %s failed", self._run_id, exc_info=True)
        self._end("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
        return False


def _forget_active_run(run_id: str) -> None:
    """Close ``run_id`` in this process without a request: off MLflow's stack of active runs
    (else its exit hook would try to end it, through every retry) and its system-metrics
    monitor told to stop (a daemon thread; not joined: it may be inside a retrying request).
    Uses MLflow's module state (``mlflow.tracking.fluent``, 3.x); where that differs, nothing
    is done."""
    from mlflow.tracking import fluent

    try:
        stack = fluent._active_run_stack.get()
        if stack and stack[-1].info.run_id == run_id:
            stack.pop()
            os.environ.pop("MLFLOW_RUN_ID", None)
        monitor = fluent.run_id_to_system_metrics_monitor.pop(run_id, None)
        if monitor is not None:
            monitor._shutdown_event.set()
    except (AttributeError, LookupError):  # pragma: no cover - another MLflow layout
        return


def _mlflow_version() -> str:
    import mlflow

    return mlflow.__version__
