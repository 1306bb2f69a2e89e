"""What every runner command shares: Hydra's ``hydra.main`` front end, one-line errors, logging.

Each command (cotrain, evaluate, inspect, compare) is a ``hydra.main`` task over a structured
config, so all of them take ``key=value`` overrides, ``--help``, ``--cfg job``, ``-m`` and
Hydra's launchers the same way. :func:`run_cli` runs such a task and keeps what users rely on:

* bad input — an unknown key or option, a value of the wrong type or out of range, an unknown
  run id, a missing data set, a corrupt checkpoint, an unknown flag — is one line
  ``<prog>: <message>`` on stderr and exit status 2, never a traceback. So are a tracking
  server's refusal (no login, a wrong password, a missing permission) and a server that does
  not answer through MLflow's retries (runners/tracking_errors.py: MLflow's exceptions are
  recognised wherever they come from), and a run that another process writes
  (runners/run_writer.py). Hydra reports
  composition errors itself in several lines unless ``HYDRA_FULL_ERROR`` is set (its
  documented switch), so it is set and the errors come back here as exceptions, which
  :func:`runners.compose.explain` puts in one line;
* a failure during training (a NaN, a checkpoint that cannot be written) is one line and exit
  status 1; a stop signal exits with 128 + signal, Ctrl-C with 130;
* the project's ``logging`` output (per-epoch summaries, warnings) goes to stderr with a time
  stamp, through tqdm so that progress bars stay intact (:func:`configure_logging`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from tqdm.auto import tqdm

from learned_at.runners.checkpoint import CheckpointError
from learned_at.runners.config import ConfigError
from learned_at.runners.device import DeviceError
from learned_at.runners.preemption import RunInterrupted
from learned_at.runners.run_store import UnknownRunError
from learned_at.runners.tracking_errors import TrackingAccessError, tracking_access_error
from learned_at.runners.writer_identity import WriterBusyError, WriterLostError
from learned_at.targets.datasets import DataSetError

__all__ = ["HYDRA_FLAGS", "USAGE_ERRORS", "UsageError", "configure_logging", "exit_on_error",
           "run_cli"]


class UsageError(ValueError):
    """A bad command line: a missing or inconsistent argument."""


USAGE_ERRORS: tuple[type[BaseException], ...] = (
    UsageError, ConfigError, UnknownRunError, CheckpointError, DeviceError, DataSetError,
    TrackingAccessError, WriterBusyError, WriterLostError)
"""Exceptions that mean "bad input" (or a refusal: the tracking server's, another writer's):
one line and exit status 2."""

HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--resolve",
               "--package", "-p", "--run", "-r", "--multirun", "-m", "--shell-completion",
               "-sc", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
               "--info", "-i", "--experimental-rerun")
"""The flags of Hydra's command line (``--hydra-help`` lists them)."""


def run_cli(prog: str, task: Callable[[], Any], config_name: str,
            failures: tuple[type[BaseException], ...] = (),
            log_level: int = logging.INFO) -> int:
    """Run a ``hydra.main`` task on ``sys.argv``; returns the exit status (module docstring).

    Args:
        prog: the command's name in messages (``runners.cotrain``).
        task: the ``hydra.main``-decorated function.
        config_name: its primary config (for the valid keys in messages).
        failures: exceptions that end a run as failed (one line, status 1).
        log_level: of the project's loggers (ranks > 0 of a torchrun job: warnings only).
    """
    configure_logging(log_level)
    args = sys.argv[1:]
    flags = [a for a in args if a.startswith("-") and a.split("=", 1)[0] not in HYDRA_FLAGS]
    if flags:
        return _fail(prog, f"unknown option {flags[0]!r}; valid: --help, -m/--multirun, "
                           "--cfg job, --hydra-help (fields are key=value; see --help)")
    if {"-m", "--multirun"} & set(args) and {"--cfg", "-c"} & set(args):
        return _fail(prog, "--cfg job shows one config, not a sweep's: give one combination "
                           "without -m")
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors as exceptions (module docstring)
    try:
        task()
        return 0
    except (HydraException, OmegaConfBaseException) as error:
        from learned_at.runners.compose import explain

        overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
        return _fail(prog, explain(error, overrides, config_name))
    except USAGE_ERRORS as error:
        return _fail(prog, str(error))
    except failures as error:
        print(f"{prog}: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except RunInterrupted as stop:
        return stop.exit_code
    except KeyboardInterrupt:
        return 130
    except SystemExit as done:  # a sweep's status, or argparse's (--cfg without a value)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BrokenPipeError:  # output piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:  # MLflow's own exception for a refused or unanswered request
        access = tracking_access_error(error)
        if access is None:
            raise
        return _fail(prog, str(access))
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def exit_on_error(prog: str, body: Callable[[], Any],
                  failures: tuple[type[BaseException], ...] = (),
                  tracking_uri: str | None = None) -> Any:
    """Run a task's body; bad input ends it with one line and ``SystemExit(2)``, a failure
    with one line and ``SystemExit(1)``, a stop signal with ``SystemExit(128 + signal)``.
    ``tracking_uri``: the store the body talks to, named when it refuses a request.

    Inside a ``hydra.main`` task an exception would reach Hydra, which writes its own lines
    before raising it again; a ``SystemExit`` passes through untouched."""
    try:
        return body()
    except USAGE_ERRORS as error:
        raise SystemExit(_fail(prog, str(error))) from None
    except failures as error:
        print(f"{prog}: {' '.join(str(error).split())}", file=sys.stderr)
        raise SystemExit(1) from None
    except RunInterrupted as stop:
        raise SystemExit(stop.exit_code) from None
    except Exception as error:  # MLflow's own exception for a refused or unanswered request
        access = tracking_access_error(error, tracking_uri)
        if access is None:
            raise
        raise SystemExit(_fail(prog, str(access))) from None


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: {' '.join(message.split())}", file=sys.stderr)
    return 2


class _TqdmHandler(logging.Handler):
    """Writes records to the current ``sys.stderr`` through ``tqdm.write`` (bars stay intact)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Log the project's package (``learned_at``) at ``level`` to stderr with a time stamp
    (once per process); MLflow and alembic log warnings only (``MLFLOW_LOGGING_LEVEL=INFO``
    brings their messages back)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    quiet = logging.getLevelName(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    for name in ("mlflow", "alembic"):  # if it was imported already
        logging.getLogger(name).setLevel(quiet if isinstance(quiet, int) else logging.WARNING)
    logger = logging.getLogger("learned_at")
    if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
