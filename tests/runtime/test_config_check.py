"""``leanloop config check``: every error at once, on its YAML line, with "did you mean"; the
engines checked against what is installed; warnings for values that make no sense."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leanloop.cli import app
from runtime import backends
from runtime.config import load_config
from runtime.config_check import Finding, check_config, engine_problems
from runtime.errors import ConfigError

BAD = """\
device_id: cam-1
hub:
  urll: http://127.0.0.1:9
  poll_interval_s: -3
inference:
  backend: onnxruntme
sink:
  type: jsnl
store:
  quotas:
    "7": {max_shares: 0.5}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "device.yaml"
    p.write_text(text)
    return p


def test_check_when_config_has_many_errors_reports_each_on_its_line_with_suggestions(
    tmp_path: Path,
) -> None:
    found = check_config(_write(tmp_path, BAD))
    assert all(f.level == "error" for f in found)
    got = {(f.key, f.line) for f in found}
    assert got == {
        ("hub.urll", 3),
        ("hub.poll_interval_s", 4),
        ("inference.backend", 6),
        ("sink.type", 8),
        ("store.quotas.7.max_shares", 11),
    }
    by_key = {f.key: f.message for f in found}
    assert "did you mean 'url'?" in by_key["hub.urll"]
    assert "did you mean 'onnxruntime'?" in by_key["inference.backend"]
    assert "did you mean 'jsonl'?" in by_key["sink.type"]
    assert "did you mean 'max_share'?" in by_key["store.quotas.7.max_shares"]
    assert [f.line for f in found] == sorted(f.line or 0 for f in found)


def test_check_when_yaml_is_broken_names_the_line(tmp_path: Path) -> None:
    [f] = check_config(_write(tmp_path, "hub:\n  url: [unclosed\nstore: {}\n"))
    assert f.level == "error" and f.line == 3 and "not readable YAML" in f.message


def test_check_when_values_make_no_sense_warns(tmp_path: Path) -> None:
    text = f"store:\n  max_bytes: 20000\nsource:\n  path: {tmp_path / 'nope'}\n"
    found = check_config(_write(tmp_path, text))
    assert {f.level for f in found} == {"warning"}
    by_key = {f.key: f for f in found}
    assert "cannot hold even one small sample" in by_key["store.max_bytes"].message
    assert by_key["store.max_bytes"].line == 2
    assert "is not a folder" in by_key["source.path"].message
    assert "no hub" in by_key["hub"].message
    found = check_config(_write(tmp_path, "hub:\n  url: http://127.0.0.1:9\n"))
    by_key = {f.key: f for f in found}
    assert "no source configured" in by_key["source"].message
    assert "no pinned root" in by_key["root"].message


def test_engines_when_a_preference_list_names_unknown_or_uninstalled_engines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert engine_problems("onnxruntime") == []
    assert engine_problems(["openvino", "onnxruntime"]) == []
    [p] = engine_problems(["onnxruntime", "litrt"])
    assert "unknown engine 'litrt'" in p and "did you mean 'litert'" in p
    assert engine_problems([]) == ["names no engine"]
    # An engine the registry knows but this machine lacks: fine while another preferred one is
    # installed, refused when none is.
    monkeypatch.setitem(backends.REGISTRY, "ghost", "runtime.backends._no_such_engine")
    assert engine_problems(["ghost", "onnxruntime"]) == []
    [p] = engine_problems("ghost")
    assert "no engine of ghost is installed here" in p and "cannot be imported" in p


def test_load_config_when_engine_is_misspelt_refuses_before_anything_runs(tmp_path: Path) -> None:
    path = _write(tmp_path, "inference:\n  backend: onnxruntme\n")
    with pytest.raises(ConfigError, match=r"inference\.backend: unknown engine 'onnxruntme'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"and 4 more: leanloop config check"):
        load_config(_write(tmp_path, BAD))


def test_cli_config_check_when_clean_exits_0_and_json_lists_findings(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    root = tmp_path / "root.json"
    root.write_text("{}")
    good = _write(
        tmp_path,
        f"source:\n  path: {tmp_path / 'inbox'}\nroot: {root}\n"
        "hub:\n  url: http://127.0.0.1:9\n  enroll_token: s3cret\n",
    )
    r = CliRunner().invoke(app, ["config", "check", str(good)])
    assert r.exit_code == 0 and r.output.strip() == f"{good}: ok", r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    r = CliRunner().invoke(app, ["config", "check", str(bad), "--json"])
    assert r.exit_code == 2
    rows = json.loads(r.stdout)
    assert len(rows) == 5 and {row["level"] for row in rows} == {"error"}
    f = Finding("warning", "hub", 2, "no hub")
    assert f.render("x.yaml") == "warning: x.yaml:2: hub: no hub"
