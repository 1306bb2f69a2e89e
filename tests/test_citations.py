"""Every document a module cites ships with the project."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"\b(docs/[\w./-]+\.md)\b")
PACKAGES = ("agents", "envs", "targets", "runners", "benchmarks", "tests")


def test_every_cited_document_exists():
    cited: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            assert "seeds.md" not in text or path.name == "test_citations.py", path
            for name in CITED.findall(text):
                cited.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert "docs/references.md" in cited
    missing = {name: where for name, where in cited.items() if not (ROOT / name).is_file()}
    assert not missing, missing
