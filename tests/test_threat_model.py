"""docs/threat-model.md names a test for every row; each named test must exist.

A row whose test was renamed or removed would claim a defence nothing shows any more.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_test_the_threat_model_names_exists_when_the_doc_is_read() -> None:
    doc = (ROOT / "docs" / "threat-model.md").read_text()
    refs = _REF.findall(doc)
    assert len(refs) >= 30  # every attacker section names its tests
    missing = [
        f"{file}::{name}"
        for file, name in refs
        if not (ROOT / file).exists() or name not in _tests_in(ROOT / file)
    ]
    assert missing == []
    # Every row of an attacker table ("it can | it cannot | shown by") names at least one test.
    in_table = False
    for line in doc.splitlines():
        if line.startswith("| it can"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|---"):
            assert _REF.search(line), f"row without a test: {line[:80]}"
