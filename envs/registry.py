"""One registry shape for the framework's extension points: geometries, policies, AT losses.

Each maps an id (``config_cls().name``, what ``threat=``, ``policy=`` and ``at_loss=`` select)
to ``(config class, component class)``. Components register with a class decorator next to
their definition; the built-in ones are imported from a catalog module the first time the
registry is read, so a user's component registers by being imported (no runner change).
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

C = TypeVar("C")  # the config class
T = TypeVar("T")  # the component class


class Registry(Generic[C, T]):
    """id -> (config class, component class) for one kind of component.

    Args:
        kind: what the entries are, for messages ("geometry", "policy", "AT loss").
        catalog: module that registers the built-in entries when imported.
    """

    def __init__(self, kind: str, catalog: str) -> None:
        self.kind = kind
        self.catalog = catalog
        self._entries: dict[str, tuple[type[C], type[T]]] = {}

    def register(self, config_cls: type[C]) -> Callable[[type[T]], type[T]]:
        """Class decorator: register the decorated class under ``config_cls().name`` and set
        its ``name`` class attribute to that id; a second class under the same id is refused."""

        def wrap(cls: type[T]) -> type[T]:
            key = config_cls().name  # type: ignore[attr-defined]
            if key in self._entries and self._entries[key][1] is not cls:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            cls.name = key  # type: ignore[attr-defined]
            self._entries[key] = (config_cls, cls)
            return cls

        return wrap

    def entries(self) -> dict[str, tuple[type[C], type[T]]]:
        """Every entry (the built-in ones imported first): a copy, id -> (config, class)."""
        importlib.import_module(self.catalog)
        return dict(self._entries)

    def unregister(self, key: str) -> None:
        """Remove ``key`` (tests that register a throw-away component clean up with it)."""
        self._entries.pop(key, None)
