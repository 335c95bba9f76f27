"""Every ``leanloop`` command prints JSON on stdout with ``--json`` (the few that cannot say
why), and ``leanloop --version`` prints the version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from leanloop.cli import app
from runtime._version import __version__

# command path -> why it has no --json
NO_JSON = {
    "device run": "the service itself (logs, not a result)",
    "device metrics": "prints the Prometheus text exposition format",
    "hub serve": "the hub server (logs, not a result)",
}


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, cmd in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            out += _commands(cmd, path + " ")
        else:
            out.append((path, cmd))
    return out


def test_every_command_has_json_option_or_says_why_not() -> None:
    root = typer.main.get_command(app)
    missing = []
    for path, cmd in _commands(root):
        flags = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if "--json" not in flags and path not in NO_JSON:
            missing.append(path)
    assert not missing, f"commands without --json: {missing}"
    paths = dict(_commands(root))
    for path in NO_JSON:  # the exceptions are real commands without the flag
        flags = {o for p in paths[path].params for o in getattr(p, "opts", [])}
        assert "--json" not in flags, f"{path} has --json now: drop it from NO_JSON"


def test_version_prints_version() -> None:
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"leanloop {__version__}"


def test_json_results_parse_when_commands_succeed(tmp_path: Path) -> None:
    runner = CliRunner()
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(bytes(range(256)) * 64)
    new.write_bytes(bytes(range(256)) * 60 + b"changed" * 100)
    r = runner.invoke(app, ["delta", "make", str(old), str(new), str(tmp_path / "p"), "--json"])
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    assert made["result_bytes"] == new.stat().st_size and made["bytes"] > 0
    r = runner.invoke(
        app, ["delta", "apply", str(old), str(tmp_path / "p"), str(tmp_path / "o"), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["bytes"] == new.stat().st_size
    r = runner.invoke(app, ["keys", "init", "--out", str(tmp_path / "keys"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["root"].endswith("root.json")
    r = runner.invoke(app, ["rollback", "--state-dir", str(tmp_path), "--json"])
    assert r.exit_code == 2 and "add --yes" in r.output
