"""What every runner CLI shares: typed ``key=value`` arguments, ``--help``, one-line errors.

The small CLIs (evaluate, inspect, compare) declare their arguments as a frozen dataclass whose
docstring has an ``Attributes:`` section; :func:`parse_args` reads ``key=value`` tokens into it
(typed by the field's default) and :func:`format_help` prints the fields with their defaults
and descriptions. :func:`run_cli` runs a CLI's body and turns a usage error — a bad argument,
an unknown run id, a bad config value — into one line on stderr and exit status 2, never a
traceback. :func:`configure_logging` sends the runners' ``logging`` output (per-epoch
summaries, warnings) to stderr, through tqdm so that progress bars stay intact.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

from tqdm.auto import tqdm

__all__ = ["UsageError", "configure_logging", "field_docs", "format_fields", "format_help",
           "format_value", "parse_args", "run_cli"]

HELP_FLAGS = ("--help", "-h")
WIDTH = 100


class UsageError(ValueError):
    """A bad command line: unknown key, bad value, missing argument, unknown run id."""


# ---------------------------------------------------------------------------------- help text

def field_docs(cls: type) -> dict[str, str]:
    """Field descriptions from the ``Attributes:`` section of a (dataclass) docstring.

    ``a, b: text`` documents several fields at once; continuation lines are joined.
    """
    docs: dict[str, str] = {}
    for klass in reversed(getattr(cls, "__mro__", [cls])):
        doc = inspect.cleandoc(klass.__doc__ or "") if "__doc__" in vars(klass) else ""
        lines = doc.splitlines()
        if "Attributes:" not in lines:
            continue
        current: list[str] = []
        for line in lines[lines.index("Attributes:") + 1:]:
            if line and not line.startswith(" "):
                break  # the next section
            m = re.match(r"^    ([\w, ]+): ?(.*)$", line)
            if m and not line.startswith("     "):
                current = [n.strip() for n in m.group(1).split(",")]
                for name in current:
                    docs[name] = m.group(2).strip()
            elif line.strip() and current:
                for name in current:
                    docs[name] = f"{docs[name]} {line.strip()}"
    return docs


def format_value(value: Any) -> str:
    """A value as it is written on the command line (``null``, ``true``, ``[a,b]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_fields(config: Any, prefix: str = "", skip: Iterable[str] = (),
                  indent: int = 2) -> list[str]:
    """One entry per field of a config dataclass (nested dataclasses are left to the caller):
    ``key=default`` and its description, wrapped to 100 columns."""
    docs = field_docs(type(config))
    pad, column = " " * indent, indent + 32
    out: list[str] = []
    for f in dataclasses.fields(config):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in skip or f.name == "defaults":
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            continue
        head = f"{pad}{key}={format_value(value)}"
        text = docs.get(f.name, "").replace("``", "")
        if len(head) >= column:
            out.append(head)
            head = ""
        out.append(textwrap.fill(head.ljust(column) + text, WIDTH,
                                 subsequent_indent=" " * column) if text or head else "")
    return [line for line in out if line]


def format_help(usage: str, summary: str, args: Any, example: str,
                notes: Iterable[str] = ()) -> str:
    """``--help`` text of a small CLI: usage, what it does, its arguments, one example."""
    lines = [f"usage: {usage}", "", textwrap.fill(summary, WIDTH), "",
             "arguments (key=value; default, then description):", *format_fields(args)]
    lines += ["", *notes] if notes else []
    lines += ["", "example:", f"  {example}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- parsing

def _convert(key: str, text: str, default: Any, annotation: str) -> Any:
    if isinstance(default, bool) or "bool" in annotation:
        if text.lower() not in ("true", "false", "1", "0"):
            raise UsageError(f"{key}={text}: expected true or false")
        return text.lower() in ("true", "1")
    if isinstance(default, list) or "list" in annotation:
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        return [t.strip() for t in inner.split(",") if t.strip()]
    if isinstance(default, int) or annotation.startswith("int"):
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{key}={text}: expected an integer") from None
    if isinstance(default, float) or annotation.startswith("float"):
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{key}={text}: expected a number") from None
    return text


def parse_args(cls: type, argv: list[str]) -> Any:
    """``key=value`` tokens -> an instance of the argument dataclass ``cls``.

    Lists are written ``[a,b,c]`` (or ``a,b,c``). Unknown keys and tokens without ``=`` raise
    :class:`UsageError` listing the valid keys.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    values: dict[str, Any] = {}
    for token in argv:
        key, sep, text = token.partition("=")
        if not sep or key not in fields:
            raise UsageError(f"unknown argument {token!r}; valid: "
                             f"{', '.join(k + '=' for k in fields)} (see --help)")
        annotation = str(fields[key].type)
        values[key] = _convert(key, text, getattr(defaults, key), annotation)
    return dataclasses.replace(defaults, **values)


# ---------------------------------------------------------------------------- running a CLI

def usage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "bad input": reported as one line with exit status 2."""
    from learned_at.runners.checkpoint import CheckpointError
    from learned_at.runners.config import ConfigError
    from learned_at.runners.device import DeviceError
    from learned_at.runners.tracking import UnknownRunError
    from learned_at.targets.datasets import DataSetError

    return (UsageError, ConfigError, UnknownRunError, CheckpointError, DeviceError, DataSetError)


def run_cli(prog: str, body: Callable[[], int], log_level: int = logging.INFO) -> int:
    """Run a CLI's body; bad input becomes ``<prog>: <message>`` on stderr and status 2.
    ``log_level``: of the project's loggers (ranks > 0 of a torchrun job: warnings only)."""
    configure_logging(log_level)
    try:
        return body()
    except usage_errors() as error:
        message = " ".join(str(error).split())  # one line, whatever the exception held
        print(f"{prog}: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def wants_help(argv: list[str]) -> bool:
    """``--help`` or ``-h`` among the arguments."""
    return any(a in HELP_FLAGS for a in argv)


# ---------------------------------------------------------------------------------- logging

class _TqdmHandler(logging.Handler):
    """Writes records to the current ``sys.stderr`` through ``tqdm.write`` (bars stay intact)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Log the project's package (``learned_at``: runners, agents, envs, targets) at ``level``
    to stderr with a time stamp (once per process); MLflow and alembic log warnings only
    (``MLFLOW_LOGGING_LEVEL=INFO`` brings their messages back)."""
    # MLflow's INFO chatter (database set-up, monitors): warnings only, unless asked for
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    quiet = logging.getLevelName(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    for name in ("mlflow", "alembic"):  # if it was imported already
        logging.getLogger(name).setLevel(quiet if isinstance(quiet, int) else logging.WARNING)
    for name in ("learned_at",):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
            handler = _TqdmHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                                   "%Y-%m-%d %H:%M:%S"))
            logger.addHandler(handler)
        logger.setLevel(level)
