"""Architecture boundaries (docs/architecture.md, "Parts and boundaries").

runtime never imports hub/trainer/leanloop/torch; bsdiff imports none of ours; the layers above
only look down: trainer never imports hub or leanloop, and hub never imports leanloop (the
``leanloop`` command package mounts the hub's commands, not the other way round). The first two
import the package with the others blocked; the layering is also read from the source, so a lazy
import inside a function cannot slip through.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_BLOCK = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def __init__(self, names): self.names = names
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in self.names:
                raise ImportError(f'forbidden import: {name}')
            return None
    sys.meta_path.insert(0, Block(set(sys.argv[1].split(','))))
    import pkgutil, importlib
    pkg = importlib.import_module(sys.argv[2])
    for m in pkgutil.walk_packages(pkg.__path__, sys.argv[2] + '.'):
        importlib.import_module(m.name)
    print('ok')
    """
)


def _import_all(package: str, blocked: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK, blocked, package],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_runtime_imports_when_hub_trainer_and_torch_are_absent() -> None:
    r = _import_all("runtime", "hub,trainer,leanloop,torch,onnx")
    assert r.returncode == 0, r.stderr[-2000:]


def test_bsdiff_imports_when_every_other_package_is_absent() -> None:
    r = _import_all("bsdiff", "hub,trainer,leanloop,runtime,torch")
    assert r.returncode == 0, r.stderr[-2000:]


# package -> the packages of ours it must never import, not even lazily inside a function
_NEVER = {
    "bsdiff": {"runtime", "hub", "trainer", "leanloop"},
    "runtime": {"hub", "trainer", "leanloop"},
    "trainer": {"hub", "leanloop"},
    "hub": {"leanloop"},
}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(_NEVER))
def test_no_module_imports_a_higher_layer_when_read_statically(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {sorted(_imported_roots(path) & _NEVER[package])}"
        for path in sorted((ROOT / package).rglob("*.py"))
        if _imported_roots(path) & _NEVER[package]
    ]
    assert not bad, "\n".join(bad)
