"""Structural rules of the code base: no norm branching outside the geometries, no import cycle
in runners/, envs/ (and agents/, targets/) never import runners/, runners/ never parse or
compare evaluation-attack names (the attack registry does), and one implementation of the
look-ahead."""

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


def test_components_do_not_import_runners():
    offenders = [f"{p.relative_to(ROOT)}: {m}" for pkg in ("envs", "agents", "targets")
                 for p in _sources(pkg) for m in _imports(p)
                 if m.startswith("learned_at.runners")]
    assert not offenders, offenders


def _compared_strings(tree: ast.AST) -> set[str]:
    """String constants a file compares against (==, !=, in, not in) or tests as a prefix or
    suffix (``.startswith``, ``.endswith``)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            operands += [e for n in operands if isinstance(n, (ast.Tuple, ast.List, ast.Set))
                         for e in n.elts]
            out.update(n.value for n in operands
                       if isinstance(n, ast.Constant) and isinstance(n.value, str))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith")):
            out.update(n.value for n in node.args
                       if isinstance(n, ast.Constant) and isinstance(n.value, str))
    return out


def test_runners_dispatch_evaluation_attacks_through_the_registry():
    """No regular expression over attack names and no comparison with an attack's name or
    family in runners/: which attack does what is the attack objects' business."""
    from learned_at.envs.attacks.registry import EVAL_ATTACKS

    def names_an_attack(text: str) -> bool:  # a name, a family (pgd) or a prefix (transfer_)
        return bool(text) and text == text.strip() and any(
            EVAL_ATTACKS.recognise(text + tail) is not None for tail in ("", "1", "fgsm"))

    offenders = []
    for path in _sources("runners"):
        tree = ast.parse(path.read_text())
        offenders += [f"{path.relative_to(ROOT)}: {s!r}" for s in sorted(_compared_strings(tree))
                      if names_an_attack(s)]
        if path.name in ("robustness.py", "masking_checks.py") and "re" in _imports(path):
            offenders.append(f"{path.relative_to(ROOT)}: imports re")
    assert not offenders, offenders


def test_configuration_does_not_import_evaluation():
    imports = _imports(ROOT / "runners" / "config.py")
    assert not {m for m in imports if m.startswith(tuple(
        f"learned_at.{m}" for m in ("runners.robustness", "runners.co_monitor", "envs.pgd",
                                    "runners.evaluate")))}


def test_one_lookahead_and_one_shadow():
    hits = [p.relative_to(ROOT) for pkg in PACKAGES for p in _sources(pkg)
            if "copy.deepcopy(" in p.read_text()]
    assert [str(h) for h in hits] == ["targets/shadow.py"], hits
