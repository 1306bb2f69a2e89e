"""Which evaluation attacks apply to which threat geometry, and the names that build them.

A geometry's attacks are registered per geometry id (``threat=<id>``)::

    register_eval_attack("linf", PGD)
    register_eval_attack("linf", AutoAttack, ensemble=True)   # the checks' strong ensemble
    register_eval_attack("linf", Square, blackbox=True)       # the checks' black-box attack

``ensemble=True`` names the strong ensemble the masking checks expect (AutoAttack; L0:
Sparse-AutoAttack), ``blackbox=True`` the query-based black-box attack they run with a query
budget when the evaluation has none (Square; L0: Sparse-RS). The built-in registrations live in
:mod:`envs.attacks.catalog`, imported the first time the registry is used (as
``envs/geometry/catalog.py`` is for the geometries), so the built-in attacks always come first
and a user's attack registers by being registered — no runner change.

Names are parsed only by the attack classes themselves (:meth:`EvalAttack.parse`): the registry
asks each class registered for the geometry. An unknown name, and a name whose attack is
registered only for other geometries, raise a ValueError that lists the geometry's spellings.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

from learned_at.envs.attacks.base import AttackRole, EvalAttack

CATALOG = "learned_at.envs.attacks.catalog"


@dataclass(frozen=True)
class GeometryAttacks:
    """The evaluation attacks registered for one geometry.

    Attributes:
        geometry: the geometry's registry id.
        classes: the attack classes, in registration order.
        ensemble: the strong ensemble of the masking checks, or None.
        blackbox: the query-based black-box attack of the masking checks, or None.
    """

    geometry: str
    classes: tuple[type[EvalAttack], ...]
    ensemble: type[EvalAttack] | None = None
    blackbox: type[EvalAttack] | None = None

    def with_role(self, role: AttackRole) -> tuple[type[EvalAttack], ...]:
        """The classes that have ``role``."""
        return tuple(c for c in self.classes if role in c.roles)

    def transfer_of(self, attack: EvalAttack) -> EvalAttack | None:
        """``attack`` crafted on a surrogate by the first surrogate attack of the geometry that
        can transfer it (``transfer_<name>``), or None."""
        for cls in self.classes:
            transfer = cls.crafted_from(attack) if cls.needs_surrogate else None
            if transfer is not None:
                return transfer
        return None

    def spellings(self, classes: Iterable[type[EvalAttack]] | None = None) -> str:
        """How the names of ``classes`` (default: all) are written, comma-separated."""
        return ", ".join(c.spelling for c in (self.classes if classes is None else classes))


class EvalAttackRegistry:
    """Geometry id -> its evaluation attack classes (module docstring).

    Args:
        catalog: module that registers the built-in attacks when imported.
    """

    def __init__(self, catalog: str = CATALOG) -> None:
        self.catalog = catalog
        self._classes: dict[str, list[type[EvalAttack]]] = {}
        self._ensemble: dict[str, type[EvalAttack]] = {}
        self._blackbox: dict[str, type[EvalAttack]] = {}

    def _load(self) -> None:
        importlib.import_module(self.catalog)  # a no-op once imported (or while importing)

    def register(self, geometry: str, cls: type[EvalAttack], *, ensemble: bool = False,
                 blackbox: bool = False) -> type[EvalAttack]:
        """Let ``cls`` apply to ``geometry``; see the module docstring for the two flags.
        Registering a class twice is a no-op; a second ensemble or black-box attack for a
        geometry, or a flag the class's roles contradict, is refused."""
        self._load()
        if ensemble and AttackRole.ENSEMBLE not in cls.roles:
            raise ValueError(f"{cls.__name__} is not an ensemble attack (AttackRole.ENSEMBLE)")
        # with_queries is a classmethod: its bound method has __func__, which mypy's Callable
        # type of it lacks (hence the ignore)
        if blackbox and (AttackRole.BLACKBOX not in cls.roles
                         or getattr(cls.with_queries, "__func__", None)
                         is EvalAttack.with_queries.__func__):  # type: ignore[attr-defined]
            raise ValueError(f"{cls.__name__} is not a query-based black-box attack "
                             "(AttackRole.BLACKBOX and with_queries)")
        for flag, table, what in ((ensemble, self._ensemble, "ensemble"),
                                  (blackbox, self._blackbox, "black-box")):
            if flag and table.get(geometry, cls) is not cls:
                raise ValueError(f"threat={geometry} already has the {what} attack "
                                 f"{table[geometry].__name__}")
            if flag:
                table[geometry] = cls
        classes = self._classes.setdefault(geometry, [])
        if cls not in classes:
            classes.append(cls)
        return cls

    def unregister(self, geometry: str, cls: type[EvalAttack]) -> None:
        """Remove ``cls`` from ``geometry`` (tests that register a throw-away attack clean up)."""
        if cls in self._classes.get(geometry, []):
            self._classes[geometry].remove(cls)
        for table in (self._ensemble, self._blackbox):
            if table.get(geometry) is cls:
                del table[geometry]

    def attacks(self, geometry: str) -> GeometryAttacks:
        """The attacks registered for ``geometry`` (the built-in ones imported first)."""
        self._load()
        return GeometryAttacks(geometry, tuple(self._classes.get(geometry, ())),
                               self._ensemble.get(geometry), self._blackbox.get(geometry))

    def all_classes(self) -> tuple[type[EvalAttack], ...]:
        """Every registered class, for any geometry, in registration order."""
        self._load()
        return tuple(dict.fromkeys(c for classes in self._classes.values() for c in classes))

    def recognise(self, name: str, classes: Iterable[type[EvalAttack]] | None = None
                  ) -> EvalAttack | None:
        """The attack one of ``classes`` (default: every registered one) parses ``name`` as,
        or None; two classes that both parse it are an error."""
        name = name.strip()
        found = [a for c in (self.all_classes() if classes is None else classes)
                 if (a := c.parse(name)) is not None]
        if len(found) > 1:
            raise ValueError(f"attack {name!r} is ambiguous: "
                             f"{', '.join(type(a).__name__ for a in found)} all parse it")
        return found[0] if found else None

    def parse(self, name: str, geometry: str | None = None) -> EvalAttack:
        """The attack ``name`` spells, for ``geometry`` (an id) when given.

        Unknown names, and attacks not registered for ``geometry``, raise a ValueError that
        lists the valid spellings (of the geometry, or of every registered attack).
        """
        name = name.strip()
        if geometry is None:
            attack = self.recognise(name)
            if attack is None:
                every = GeometryAttacks("any", self.all_classes())
                raise ValueError(f"unknown attack {name!r}; valid: {every.spellings()}")
            return attack
        table = self.attacks(geometry)
        if not table.classes:
            raise ValueError(f"no evaluation attacks are registered for threat={geometry} "
                             "(envs.attacks.registry.register_eval_attack)")
        attack = self.recognise(name, table.classes)
        if attack is not None and all(c in table.classes for c in attack.requires()):
            return attack
        if attack is None and self.recognise(name) is None:
            raise ValueError(f"unknown attack {name!r} for threat={geometry}; valid: "
                             f"{table.spellings()}")
        raise ValueError(f"attack {name!r} does not apply to threat={geometry}; its attacks: "
                         f"{table.spellings()}")


EVAL_ATTACKS = EvalAttackRegistry()
"""The registry of evaluation attacks."""


def register_eval_attack(geometry: str, cls: type[EvalAttack], *, ensemble: bool = False,
                         blackbox: bool = False) -> type[EvalAttack]:
    """Register the attack class ``cls`` for the geometry ``geometry`` (module docstring)."""
    return EVAL_ATTACKS.register(geometry, cls, ensemble=ensemble, blackbox=blackbox)


def unregister_eval_attack(geometry: str, cls: type[EvalAttack]) -> None:
    """Remove ``cls`` from ``geometry``'s attacks."""
    EVAL_ATTACKS.unregister(geometry, cls)


def geometry_attacks(geometry: str) -> GeometryAttacks:
    """The evaluation attacks registered for the geometry id ``geometry``."""
    return EVAL_ATTACKS.attacks(geometry)


def parse_eval_attack(name: str, geometry: str | None = None) -> EvalAttack:
    """Build the attack ``name`` spells (see :meth:`EvalAttackRegistry.parse`)."""
    return EVAL_ATTACKS.parse(name, geometry)
