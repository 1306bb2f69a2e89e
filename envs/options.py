"""Closed option sets are ``Enum``s; :func:`parse_option` turns a user's value into a member with
an error that names the field and the valid values."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

E = TypeVar("E", bound=Enum)


def parse_option(enum_cls: type[E], value: E | str, field: str) -> E:
    """``enum_cls(value)``, or a ValueError such as
    "policy.prior: unknown option 'xx'; valid: bp, ep, mep"."""
    try:
        return enum_cls(value)
    except ValueError:
        valid = ", ".join(str(m.value) for m in enum_cls)
        raise ValueError(f"{field}: unknown option {value!r}; valid: {valid}") from None
