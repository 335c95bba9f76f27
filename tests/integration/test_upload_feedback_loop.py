"""Feedback from the field to the hub with real processes: a correction shows in the device's
status and heartbeat, travels with the sample, tops the hub's queue, and the device's metrics
survive the sample leaving its store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from loopkit import Loop
from typer.testing import CliRunner

from leanloop.cli import app
from runtime.operator import give_feedback, list_samples


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_correction_when_given_on_device_reaches_status_heartbeat_and_hub_queue(loop: Loop) -> None:
    loop.publish(1)
    dev = loop.start_device(upload={"interval_s": 3600})  # keep the samples on the device for now
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
            (loop.admin.feedback_metrics()["devices"].get("cam-1", {}).get("reported") or {}).get(
                "corrections"
            )
            == 1
        ),
    )

    # Open the uploads: restart the same device with a short upload interval.
    dev.reconfigure(upload={"interval_s": 0.3})
    wait_for("samples at the hub", lambda: len(loop.admin.samples(limit=100)) == 4)
    queue = loop.admin.samples(state="pending")
    # The frames are painted alike: one image, one queue entry, standing for its 4 copies.
    assert [e["queue"]["copies"] for e in queue] == [4]
    assert queue[0]["queue"]["tier"] == "corrected" and queue[0]["feedback"]["label"] == label
    hub_view = loop.admin.feedback_metrics()["devices"]["cam-1"]["hub"]
    assert hub_view["confusion"] == {predicted: {label: 1}}
    st = dev.wait("store emptied", lambda st: st["store"]["count"] == 0 and st.get("upload"))
    assert st["feedback"]["corrections"] == 1  # the ledger kept it after the release
    assert st["upload"]["window_open"] is True


def test_correction_on_an_uploaded_sample_is_queued_on_the_device_and_reaches_the_hub(
    loop: Loop,
) -> None:
    from runtime.feedback_stats import predicted_label

    loop.publish(1)
    dev = loop.start_device()  # uploads every 0.3 s: samples leave the store at once
    dev.wait("v1", lambda st: (st.get("active") or {}).get("version") == 1)
    dev.feed(2)
    wait_for("samples at the hub", lambda: len(loop.admin.samples(limit=100)) == 2)
    dev.wait("store emptied", lambda st: st["writer"]["stored"] == 2 and st["store"]["count"] == 0)
    entry = loop.admin.samples(limit=100)[0]
    predicted = predicted_label(entry["prediction"], None)
    label = "0" if predicted != "0" else "1"

    # The service runs: the CLI goes through its control socket.
    cmd = ["feedback", "correct", entry["id"], "--label", label, "--who", "ana"]
    r = CliRunner().invoke(app, [*cmd, "--config", str(dev.config)])
    assert r.exit_code == 0, r.stdout
    assert "already uploaded" in r.stdout
    wait_for(
        "the correction at the hub",
        lambda: (
            (loop.admin.feedback_metrics()["devices"].get("cam-1", {}).get("hub") or {}).get(
                "confusion"
            )
            == {predicted: {label: 1}}
        ),
    )
    st = dev.wait(
        "the outbox drained and the metrics counted",
        lambda st: (
            ((st.get("upload") or {}).get("feedback_outbox") or {}).get("queued") == 0
            and (st.get("feedback") or {}).get("corrections") == 1
        ),
    )
    assert st["feedback"]["confusion"] == {predicted: {label: 1}}

    # Service down: the CLI queues on the device itself; a second word replaces the first.
    dev.stop(close_log=False)
    r = CliRunner().invoke(
        app, ["feedback", "confirm", entry["id"], "--who", "bo", "--config", str(dev.config)]
    )
    assert r.exit_code == 0 and "already uploaded" in r.stdout, r.stdout
    r = CliRunner().invoke(
        app, ["feedback", "confirm", "0000-unknown", "--config", str(dev.config)]
    )
    assert r.exit_code != 0 and "no sample 0000-unknown" in r.output
    dev.restart()
    wait_for(
        "the confirmation replacing the correction at the hub",
        lambda: (
            (loop.admin.feedback_metrics()["devices"].get("cam-1", {}).get("hub") or {}).get(
                "confirmations"
            )
            == 1
        ),
    )
    st = dev.wait(
        "metrics replaced",
        lambda st: (st.get("feedback") or {}).get("confirmations") == 1,
    )
    assert (st["feedback"]["reviewed"], st["feedback"]["corrections"]) == (1, 0)
