"""Config fields: their help text (:func:`setting`), closed option sets as ``Enum``s
(:func:`parse_option`), and numeric ranges as :class:`Limit` (declared per config class in a
``limits`` class attribute and checked by :func:`check_limits` when the run's config is
composed)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

E = TypeVar("E", bound=Enum)

DOC = "doc"
"""Metadata key of a config field's help text."""


def setting(default: Any = dataclasses.MISSING, doc: str = "", *,
            factory: Callable[[], Any] | None = None) -> Any:
    """A config dataclass field with its help text (what ``--help`` shows for it).

    Args:
        default: the field's default (immutable values only).
        doc: one or two lines: what the field means, its unit, what ``null`` stands for.
        factory: a default factory instead of ``default`` (lists, nested configs).
    """
    metadata = {DOC: doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_doc(config_cls: type, name: str) -> str:
    """The help text of field ``name`` of a config dataclass ("" when it has none)."""
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return str(f.metadata.get(DOC, ""))
    return ""


def parse_option(enum_cls: type[E], value: E | str, field: str) -> E:
    """``enum_cls(value)``, or a ValueError such as
    "policy.prior: unknown option 'xx'; valid: bp, ep, mep"."""
    try:
        return enum_cls(value)
    except ValueError:
        valid = ", ".join(str(m.value) for m in enum_cls)
        raise ValueError(f"{field}: unknown option {value!r}; valid: {valid}") from None


@dataclass(frozen=True)
class Limit:
    """The accepted range of a numeric config field (of each element, for a list field).

    A config class declares its fields' limits as a class attribute
    ``limits: ClassVar[dict[str, Limit]]``; ``None`` values (a preset) are not checked.
    Every float must be finite, whatever its limit.

    Attributes:
        low: smallest accepted value (None: unbounded).
        high: largest accepted value (None: unbounded).
        low_open: ``low`` itself is excluded (``> low``).
        high_open: ``high`` itself is excluded (``< high``).
        integer: the value must be a whole number.
        why: what the range means, shown after it in the message (optional).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    why: str = ""

    def describe(self) -> str:
        """The range in interval notation: ``[1, inf)``, ``(0, 1]``, ``any finite value``."""
        if self.low is None and self.high is None:
            return "an integer" if self.integer else "any finite value"
        left = "(" if self.low is None or self.low_open else "["
        right = ")" if self.high is None or self.high_open else "]"
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        text = f"{left}{low}, {high}{right}"
        return f"integers in {text}" if self.integer else text

    def accepts(self, value: float) -> bool:
        """Whether one value lies in the range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


FINITE = Limit()
"""Any finite value (a field with no natural range)."""
POSITIVE = Limit(0, low_open=True)
NON_NEGATIVE = Limit(0)
COUNT = Limit(1, integer=True)
"""A whole number >= 1 (sizes, step counts of evaluation attacks)."""
NON_NEGATIVE_INT = Limit(0, integer=True)
FRACTION = Limit(0, 1)
"""[0, 1]: fractions of training."""
MOMENTUM = Limit(0, 1, high_open=True)
"""[0, 1): momenta and moving-average factors."""
PROBABILITY = Limit(0, 1, low_open=True)
"""(0, 1]: a probability put on the true class (1 = no label smoothing)."""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_limits(config: Any, prefix: str, limits: Mapping[str, Limit] | None = None) -> list[str]:
    """One message per field of ``config`` whose value lies outside its :class:`Limit`.

    Args:
        config: a config dataclass instance.
        prefix: its path on the command line (``policy``), or "" at the top level.
        limits: field -> limit; default: the config class's ``limits`` attribute.

    Returns:
        Messages such as ``"policy.steps=-1 is out of range: accepted integers in [0, inf)"``.
    """
    limits = getattr(type(config), "limits", {}) if limits is None else limits
    problems = []
    for name, limit in limits.items():
        value = getattr(config, name)
        if value is None:
            continue
        items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) \
            else [value]
        bad = [v for v in items if not limit.accepts(v)]
        if bad:
            key = f"{prefix}.{name}" if prefix else name
            shown = _number(bad[0]) if isinstance(bad[0], (int, float)) and \
                not isinstance(bad[0], bool) and math.isfinite(bad[0]) else repr(bad[0])
            where = "" if len(items) == 1 and items[0] is value else " (an element)"
            why = f" ({limit.why})" if limit.why else ""
            problems.append(f"{key}={shown}{where} is out of range: accepted "
                            f"{limit.describe()}{why}")
    return problems
