"""``python -m fuzz`` (what ``make fuzz`` runs): a goal of inputs per parser, a time cap, the
table and the JSON record; exit 1 when a parser falls short of its goal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fuzz(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fuzz", "--workdir", str(tmp_path / "work"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_fuzz_runs_each_parser_to_its_inputs_goal_and_fails_when_one_falls_short(
    tmp_path: Path,
) -> None:
    pytest.importorskip("atheris", reason="atheris does not install here")
    out = tmp_path / "fuzz.json"
    r = _fuzz(tmp_path, "--inputs", "3000", "--seconds", "120", "--json", str(out), "delta")
    assert r.returncode == 0, r.stdout + r.stderr
    head, row = r.stdout.splitlines()[:2]
    assert head.split()[:4] == ["target", "parser", "inputs", "crashes"]
    assert row.split()[0] == "delta" and row.split()[-1] == "met"
    (got,) = json.loads(out.read_text())
    assert got["inputs"] == 3000 and got["crashes"] == 0 and got["cpu_seconds"] > 0

    r = _fuzz(tmp_path, "--inputs", str(10**9), "--seconds", "1", "delta")
    assert r.returncode == 1
    assert r.stdout.splitlines()[1].split()[-1] == "short"
    assert "fewer than 1,000,000,000 inputs within 1 s: delta" in r.stdout
