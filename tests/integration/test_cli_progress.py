"""Progress bars where an operator waits: ``bundle publish`` (the upload to the hub) and
``status --watch`` (a device's bundle download), drawn on stderr as on a terminal (rich's
``TTY_COMPATIBLE``/``TTY_INTERACTIVE`` force one through the pipe) up to 100 %, while
``--json`` keeps stdout pure JSON and draws nothing. Real hub, real device process, a real
slow link (the fault proxy's rate cap) so the download lasts long enough to be watched."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from loopkit import BundleMaker, Device, committed
from typer.testing import CliRunner

from hil.faultproxy import FaultProxy
from hub.client import HubAdminClient
from hub.testing import LiveHub
from leanloop.cli import app

TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "200"}
BOXES = [(25.0, 25.0, 30.0, 30.0)]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _final_bar(stderr: str, label: str) -> str:
    lines = [ln for ln in ANSI.sub("", stderr).splitlines() if label in ln]
    assert lines, stderr
    return lines[-1]


def test_publish_and_status_watch_when_at_a_terminal_draw_bars_to_100_percent(
    live_hub: LiveHub,
    admin: HubAdminClient,
    keys: Path,
    make_bundle: BundleMaker,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    big = random.Random(1).randbytes(600_000)  # random: does not compress, takes ~5 s below
    v1 = make_bundle(1, BOXES, extra={"data.bin": big})
    common = ["--hub", live_hub.url, "--keys", str(keys), "--token", live_hub.admin_token]
    r = CliRunner().invoke(app, ["bundle", "publish", str(v1), *common], env=TERMINAL)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("published digits 1")  # the result alone on stdout
    bar = _final_bar(r.stderr, "upload bundle-v1")
    assert "100%" in bar and "MB" in bar
    v2 = make_bundle(2, BOXES, extra={"data.bin": big[::-1]})
    r = CliRunner().invoke(app, ["bundle", "publish", str(v2), *common, "--json"], env=TERMINAL)
    assert r.exit_code == 0 and r.stderr == "", r.output
    assert json.loads(r.stdout)["version"] == 2
    v3 = make_bundle(3, BOXES, extra={"data.bin": big[1:]})
    r = CliRunner().invoke(app, ["bundle", "publish", str(v3), *common])  # stderr: a pipe
    assert r.exit_code == 0 and r.stderr == "", r.output

    admin.rollout("digits", 1)
    with FaultProxy("127.0.0.1", live_hub.port, rate_bps=120_000) as link:
        # The device reaches the hub through the slow link only.
        behind_link = cast(
            LiveHub, SimpleNamespace(url=link.url, enroll_token=live_hub.enroll_token)
        )
        dev = Device(tmp_path / "devices", behind_link, keys / "root.json", status_interval_s=0.2)
        request.addfinalizer(dev.stop)
        dev.wait("the download under way", lambda st: bool(st.get("download")), timeout=30)
        cmd = ["status", "--watch", "--config", str(dev.config)]
        as_json = subprocess.Popen(
            [sys.executable, "-m", "leanloop.cli", *cmd, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **TERMINAL},
        )
        r = CliRunner().invoke(app, cmd, env=TERMINAL)
        out, err = as_json.communicate(timeout=60)
    assert r.exit_code == 0, r.output
    bar = _final_bar(r.stderr, "download digits v1")
    assert "100%" in bar, r.stderr
    assert "active" in r.stdout and "download digits" not in r.stdout
    assert as_json.returncode == 0 and err == "", err
    assert json.loads(out)["download"] is None, out  # the status once the download ended
    dev.wait("v1 committed", committed(1))


def test_status_watch_when_the_service_is_stopped_returns_at_once_without_a_bar(
    tmp_path: Path,
) -> None:
    # A status file left by a service stopped mid-download: not live, nothing to follow.
    dl = {"bundle": "digits", "version": 2, "bytes": 10, "total_bytes": 100, "percent": 10.0,
          "rate_bps": 5.0}  # fmt: skip
    stale = {"download": dl}
    (tmp_path / "status.json").write_text(json.dumps(stale))
    cmd = ["status", "--watch", "--timeout", "5", "--state-dir", str(tmp_path)]
    r = CliRunner().invoke(app, [*cmd, "--json"], env=TERMINAL)
    assert r.exit_code == 0 and r.stderr == "", r.output
    assert json.loads(r.stdout)["download"]["bytes"] == 10
    r = CliRunner().invoke(app, cmd, env=TERMINAL)
    assert r.exit_code == 0 and "download digits" not in r.stderr, r.output
    assert "not running" in r.stdout
