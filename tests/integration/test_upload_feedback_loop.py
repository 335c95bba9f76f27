"""Feedback from the field to the hub with real processes: a correction shows in the device's
status and heartbeat, travels with the sample, tops the hub's queue, and the device's metrics
survive the sample leaving its store."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from loopkit import BundleMaker, Device, publish
from typer.testing import CliRunner

from hub.client import HubAdminClient
from hub.testing import LiveHub
from leanloop.cli import app
from runtime.operator import give_feedback, list_samples

BOXES = [(25.0, 25.0, 30.0, 30.0), (70.0, 70.0, 40.0, 40.0)]


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_correction_when_given_on_device_reaches_status_heartbeat_and_hub_queue(
    live_hub: LiveHub,
    admin: HubAdminClient,
    keys: Path,
    make_bundle: BundleMaker,
    start_device: Callable[..., Device],
) -> None:
    publish(admin, keys, make_bundle(1, BOXES), 1)
    dev = start_device(upload={"interval_s": 3600})  # keep the samples on the device for now
    dev.wait("v1", lambda st: (st.get("active") or {}).get("version") == 1)
    dev.feed(4)
    dev.wait("stored", lambda st: st["writer"]["stored"] >= 4)
    max_bytes = 64 << 20
    rows = list_samples(dev.state, 10, max_bytes)
    target = rows[-1]["id"]
    predicted = rows[-1]["summary"].split(":")[0]
    label = "0" if predicted != "0" else "1"
    give_feedback(dev.state, max_bytes, target, label, "ana")

    st = dev.wait("feedback in status", lambda st: (st.get("feedback") or {}).get("reviewed"))
    assert st["feedback"]["confusion"] == {predicted: {label: 1}}
    assert st["feedback"]["classes"][predicted]["accuracy"] == 0.0
    shown = CliRunner().invoke(app, ["status", "--config", str(dev.config)])
    assert "1 reviewed, 1 corrected" in shown.stdout
    wait_for(
        "the correction in a heartbeat at the hub",
        lambda: (
            (admin.feedback_metrics()["devices"].get("cam-1", {}).get("reported") or {}).get(
                "corrections"
            )
            == 1
        ),
    )

    # Open the uploads: restart the same device with a short upload interval.
    dev.proc.terminate()
    dev.proc.wait(10)
    cfg = yaml.safe_load(dev.config.read_text())
    cfg["upload"] = {"interval_s": 0.3}
    dev.config.write_text(yaml.safe_dump(cfg))
    dev.proc = subprocess.Popen(
        [sys.executable, "-m", "leanloop.cli", "device", "run", "--config", str(dev.config)],
        stdout=dev.log,
        stderr=subprocess.STDOUT,
    )
    wait_for("samples at the hub", lambda: len(admin.samples(limit=100)) == 4)
    queue = admin.samples(state="pending")
    # The frames are painted alike: one image, one queue entry, standing for its 4 copies.
    assert [e["queue"]["copies"] for e in queue] == [4]
    assert queue[0]["queue"]["tier"] == "corrected" and queue[0]["feedback"]["label"] == label
    hub_view = admin.feedback_metrics()["devices"]["cam-1"]["hub"]
    assert hub_view["confusion"] == {predicted: {label: 1}}
    st = dev.wait("store emptied", lambda st: st["store"]["count"] == 0 and st.get("upload"))
    assert st["feedback"]["corrections"] == 1  # the ledger kept it after the release
    assert st["upload"]["window_open"] is True
