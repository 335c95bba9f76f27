"""The unit files point at commands that exist and keep the hardening we rely on."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.read(ROOT / "systemd" / name)
    return cp


def test_device_unit_runs_device_service_when_started() -> None:
    u = _unit("leanloop.service")
    assert "leanloop device run --config" in u["Service"]["ExecStart"]
    assert u["Service"]["Restart"] == "on-failure"
    assert u["Service"]["ProtectSystem"] == "strict"
    assert u["Service"]["StateDirectory"] == "leanloop"


def test_hub_unit_serves_hub_when_started() -> None:
    u = _unit("leanloop-hub.service")
    assert "leanloop hub serve --data" in u["Service"]["ExecStart"]
