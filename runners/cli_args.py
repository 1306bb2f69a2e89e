"""``key=value`` argument parsing for the small CLIs (evaluate, inspect, compare)."""

from __future__ import annotations

from typing import Any


def _parse_value(text: str, default: Any) -> Any:
    if text.startswith("[") and text.endswith("]"):
        return [t.strip() for t in text[1:-1].split(",") if t.strip()]
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise SystemExit(f"expected true/false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            return int(text)
        except ValueError:
            raise SystemExit(f"expected an integer, got {text!r}") from None
    if isinstance(default, list):
        return [t.strip() for t in text.split(",") if t.strip()]
    return text


def parse_key_values(argv: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """Parse ``key=value`` tokens against ``defaults``; unknown keys exit listing valid ones.

    Lists are written ``[a,b,c]`` (or ``a,b,c`` for list-valued keys).
    """
    out = dict(defaults)
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or key not in defaults:
            raise SystemExit(f"unknown argument {token!r}; valid keys: "
                             f"{', '.join(k + '=' for k in defaults)}")
        out[key] = _parse_value(value, defaults[key])
    return out
