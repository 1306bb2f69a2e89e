"""Structural rules of the code base: no norm branching outside the geometries, no import cycle
in runners/, and one implementation of the look-ahead."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agents", "envs", "targets", "runners")


def _sources(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("learned_at", *parts)).removesuffix(".__init__")


def test_no_norm_branching_outside_the_geometries():
    pattern = re.compile(r"Norm\.(LINF|L2|L0)|\.norm (is|==) |norm == \"l")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for pkg in PACKAGES for p in _sources(pkg)
                 if "geometry" not in p.parts
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


def _imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file (lazy imports in functions included; imports
    for type checking only are not imports at run time)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_runners_have_no_import_cycle():
    modules = {_module(p): p for p in _sources("runners")}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_configuration_does_not_import_evaluation():
    imports = _imports(ROOT / "runners" / "config.py")
    assert not {m for m in imports if m.startswith(tuple(
        f"learned_at.{m}" for m in ("runners.robustness", "runners.co_monitor", "envs.pgd",
                                    "runners.evaluate")))}


def test_one_lookahead_and_one_shadow():
    hits = [p.relative_to(ROOT) for pkg in PACKAGES for p in _sources(pkg)
            if "copy.deepcopy(" in p.read_text()]
    assert [str(h) for h in hits] == ["targets/shadow.py"], hits
