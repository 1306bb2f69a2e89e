"""Import names: the project imports as ``learned_at.*`` everywhere, so a user's own ``envs``,
``agents``, ``targets`` or ``runners`` package cannot shadow it; ``learned_at/`` links to the
top-level folders, so the names resolve the same way in the checkout, an editable install, a
wheel and for static tools (learned_at/__init__.py)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("envs", "agents", "targets", "runners")
SOURCE_DIRS = (*FOLDERS, "benchmarks", "tests", "learned_at")

#: run in a fresh interpreter whose sys.path starts with decoy packages of the four names
PROBE = """
import envs, runners
assert envs.DECOY and runners.DECOY                     # the user's packages are importable
import sys
import learned_at.runners.cotrain as cotrain
from learned_at.envs.attack_env import AttackEnv
from learned_at.envs.geometry.base import make_geometry
import learned_at.envs as project_envs
assert not hasattr(project_envs, "DECOY"), project_envs.__file__
assert project_envs.__file__.startswith({where!r}), project_envs.__file__
sys.argv = ["lat-cotrain", "--help"]
assert cotrain.main() == 0
print("PROBE-OK", project_envs.__file__)
"""


def _decoys(folder: Path) -> Path:
    for name in FOLDERS:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text("DECOY = True\n")
    return folder


def _probe(pythonpath: list[Path], cwd: Path, where: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath)),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", PROBE.format(where=str(where))], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_no_module_imports_the_folders_as_top_level_packages():
    offenders = []
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) and
                         node.level == 0 else [])
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                              if n.split(".")[0] in FOLDERS]
    assert not offenders, offenders


def test_one_packaging_mechanism_links_in_the_package():
    """learned_at/<folder> is a relative link to the top-level folder; setuptools finds the
    packages through it (no hand-kept package list, no package-dir mapping, no __path__
    surgery)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    for name in FOLDERS:
        link = ROOT / "learned_at" / name
        assert link.is_symlink() and os.readlink(link) == f"../{name}", link
        assert link.resolve() == (ROOT / name).resolve()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "package-dir" not in config and config["packages"] == {
        "find": {"include": ["learned_at", "learned_at.*"]}}
    source = (ROOT / "learned_at" / "__init__.py").read_text()
    assert "__path__" not in source


def test_a_static_tool_resolves_the_import_names():
    """An import-graph walk that executes nothing (the files on disk, the repository root as
    the only search path) finds the project's imports between its own files."""
    found, missing = 0, []
    files = [p for name in FOLDERS for p in (ROOT / "learned_at" / name).rglob("*.py")]
    assert files  # rglob follows the links
    for path in sorted(files):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and \
                    (node.module or "").startswith("learned_at."):
                parts = node.module.split(".")
                target = ROOT.joinpath(*parts)
                if target.with_suffix(".py").is_file() or (target / "__init__.py").is_file():
                    found += 1
                else:
                    missing.append(f"{path.relative_to(ROOT)}: {node.module}")
    assert not missing, missing
    assert found > 200


def test_source_checkout_imports_the_project_beside_a_users_decoy_packages(tmp_path):
    decoys = _decoys(tmp_path / "user")
    done = _probe([decoys, ROOT], cwd=tmp_path, where=ROOT)
    assert done.returncode == 0 and "PROBE-OK" in done.stdout, done.stderr[-3000:]


@pytest.mark.packaging
def test_installed_wheel_imports_the_project_beside_a_users_decoy_packages(tmp_path):
    """Build the wheel, unpack it as site-packages would hold it, and import it from a folder
    that is not the checkout, with decoy packages first on sys.path."""
    source = tmp_path / "source"  # a copy: setuptools builds inside the source folder
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("learned_at", *FOLDERS):  # learned_at's links stay links
        shutil.copytree(ROOT / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("learned_at-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
        names = archive.namelist()
    assert not {n.split("/")[0] for n in names} & set(FOLDERS)  # no top-level envs/ etc.
    assert "learned_at/envs/geometry/l0.py" in names
    decoys = _decoys(tmp_path / "user")
    done = _probe([decoys, site], cwd=tmp_path, where=site)
    assert done.returncode == 0 and "PROBE-OK" in done.stdout, done.stderr[-3000:]


def test_readme_commands_run_from_the_repository_root():
    """``python -m runners.cotrain`` (the README's form) runs from the repository root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-m", "runners.cotrain", "--help"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "console script: lat-cotrain" in done.stdout, done.stderr
