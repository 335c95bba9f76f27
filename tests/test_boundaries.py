"""Architecture boundaries: runtime never imports hub/trainer/torch; bsdiff imports none of ours."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

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
