"""`leanloop delta make/apply` on real files: round trip, and a one-line refusal on a wrong base."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from leanloop.cli import app


def test_delta_round_trips_when_base_is_right_and_refuses_when_it_is_not(tmp_path: Path) -> None:
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    base = os.urandom(50_000)
    old.write_bytes(base)
    new.write_bytes(base[:20_000] + b"changed" + base[20_000:])
    runner = CliRunner()
    r = runner.invoke(app, ["delta", "make", str(old), str(new), str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p").stat().st_size < 5_000
    r = runner.invoke(app, ["delta", "apply", str(old), str(tmp_path / "p"), str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o").read_bytes() == new.read_bytes()
    r = runner.invoke(app, ["delta", "apply", str(new), str(tmp_path / "p"), str(tmp_path / "x")])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and r.output.startswith("error: ")
    assert not (tmp_path / "x").exists()
