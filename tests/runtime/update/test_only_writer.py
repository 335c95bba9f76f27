"""The installer is the only writer of the slots (issue 11, part 5), read from the source.

Outside ``runtime/update/{installer,machine,slots}.py`` no module of ours calls a method that
changes the slots or the install machine on a ``slots`` or ``machine`` object, nor builds an
``InstallMachine``: the service, the shadow manager and the operator commands (service up or
down) all go through :mod:`runtime.update.installer`. Reading the slots (``info``, ``dir``,
``state``...) is free. Like ``tests/test_boundaries.py``, a lazy import or a call inside a
function cannot slip through.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from runtime.update.machine import InstallMachine
from runtime.update.slots import Slots

ROOT = Path(__file__).resolve().parents[3]
ALLOWED = {ROOT / "runtime" / "update" / n for n in ("installer.py", "machine.py", "slots.py")}
PACKAGES = ("runtime", "hub", "leanloop", "trainer", "hil", "bench")

# Slots and InstallMachine methods that only read.
_READERS = {"dir", "active_dir", "inactive", "info", "is_held", "check_version", "free_bytes"}


def _writers() -> set[str]:
    names: set[str] = set()
    for cls in (Slots, InstallMachine):
        for name, member in vars(cls).items():
            if not name.startswith("_") and inspect.isfunction(member):
                names.add(name)
    return names - _READERS


WRITERS = _writers()


def _receiver_name(node: ast.expr) -> str | None:
    """``slots`` for ``slots.x``, ``self.slots.x``, ``inst.slots.x``; else the last name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def violations(source: str, filename: str = "<src>") -> list[str]:
    """Calls that change the slots or the install machine, one line each."""
    out: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if _receiver_name(f) == "InstallMachine":
            out.append(f"{filename}:{node.lineno}: builds an InstallMachine")
        elif isinstance(f, ast.Attribute) and f.attr in WRITERS:
            recv = _receiver_name(f.value)
            if recv is not None and recv.lstrip("_") in ("slots", "machine"):
                out.append(f"{filename}:{node.lineno}: {recv}.{f.attr}(...) writes the slots")
    return out


def test_writer_list_covers_the_methods_that_change_the_slots() -> None:
    assert {"save", "recover", "mark_good_nosave", "activate_nosave", "commit_nosave"} <= WRITERS
    assert {"fire", "start", "begin_rollback", "finish_rollback"} <= WRITERS
    assert not WRITERS & _READERS


@pytest.mark.parametrize(
    "snippet",
    [
        "slots.save('x')",
        "self.slots.mark_good_nosave('digits', 2)",
        "def f(inst):\n    inst.machine.begin_rollback('why')",
        "from runtime.update.machine import InstallMachine\nm = InstallMachine(s)",
    ],
)
def test_scanner_flags_a_write_when_it_is_outside_the_installer(snippet: str) -> None:
    assert violations(snippet) != []


def test_scanner_lets_reads_through_when_they_only_look() -> None:
    assert violations("slots.info('a')\nself.slots.dir('b')\ninstaller.slots.state\n") == []


@pytest.mark.parametrize("package", PACKAGES)
def test_only_the_installer_writes_the_slots_when_any_module_is_read(package: str) -> None:
    found: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if path in ALLOWED:
            continue
        found += violations(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []
