"""The field operator's commands against a real device process: status, samples, feedback and
rollback, both through the control socket (service running) and on disk (service stopped)."""

from __future__ import annotations

import json

from loopkit import Loop, committed
from typer.testing import CliRunner

from hub.client import HubAdminClient
from leanloop.cli import app

BOXES_V2 = [(25.0, 25.0, 28.0, 28.0)]


def test_operator_sees_samples_and_corrects_them_when_the_service_runs(loop: Loop) -> None:
    dev = loop.serving_device(upload={"interval_s": 3600})  # keep samples on the device
    dev.feed(5)
    dev.wait("stored", lambda st: st["writer"]["stored"] >= 5)
    runner = CliRunner()
    cfg = ["--config", str(dev.config)]

    r = runner.invoke(app, ["status", *cfg, "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    assert st["running"] and st["active"]["version"] == 1

    r = runner.invoke(app, ["samples", "list", *cfg, "--top", "3", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 3 and rows[0]["priority"] >= rows[-1]["priority"]
    last = rows[-1]["id"]

    r = runner.invoke(app, ["feedback", "correct", last, "--label", "5", "--who", "ana", *cfg])
    assert r.exit_code == 0, r.output
    rows = json.loads(runner.invoke(app, ["samples", "list", *cfg, "--json"]).stdout)
    assert rows[0]["id"] == last  # corrected samples go first
    assert rows[0]["feedback"]["label"] == "5" and rows[0]["feedback"]["who"] == "ana"

    r = runner.invoke(app, ["feedback", "correct", last, "--label", "banana", *cfg])
    assert r.exit_code == 2 and r.output.startswith("error: unknown label 'banana'")
    assert r.output.count("\n") == 1
    r = runner.invoke(app, ["feedback", "confirm", "0000-nope", *cfg])
    assert r.exit_code == 1 and "no sample 0000-nope" in r.output

    assert st["update_state"] == "committed"  # live, from the control socket
    sock = dev.state / "control.sock"
    assert sock.stat().st_mode & 0o777 == 0o600

    r = runner.invoke(app, ["rollback", "--yes", *cfg])
    assert r.exit_code == 1 and "no previous committed bundle" in r.output


def test_rollback_swaps_back_between_frames_when_the_service_runs(loop: Loop) -> None:
    dev = loop.serving_device()
    loop.publish(2, BOXES_V2)
    dev.feed(3)
    dev.wait("v2 committed", committed(2))
    r = CliRunner().invoke(app, ["rollback", "--yes", "--config", str(dev.config)])
    assert r.exit_code == 0, r.output
    assert "rolled back to digits v1" in r.output
    assert dev.proc.poll() is None  # the service kept running
    names = dev.feed(3)
    st = dev.wait("v1 serving", lambda st: all(n in dev.results() for n in names))
    assert {dev.results()[n]["bundle_version"] for n in names} == {1}
    st = dev.wait("rolled back", lambda st: st["update_state"] == "rolled_back")
    assert st["active"]["version"] == 1 and st["active"]["status"] == "committed"
    assert dev.proc.poll() is None
    slots = json.loads((dev.state / "slots.json").read_text())
    assert 2 in slots["held"]["digits"]  # the hub's v2 is not re-installed by itself
    assert "digits" not in slots["bad_versions"]  # an operator's rollback is not a failure
    dev.wait(
        "rollback reported to the hub",
        lambda st: any(
            e["cause"] == "operator" and e["version"] == 2
            for e in _device_record(loop.admin, "cam-1").get("events", [])
        ),
    )


def _device_record(admin: HubAdminClient, device_id: str) -> dict:  # type: ignore[type-arg]
    return next(d for d in admin.devices() if d["device_id"] == device_id)


def test_rollback_returns_to_previous_bundle_when_the_service_is_stopped(loop: Loop) -> None:
    dev = loop.serving_device(upload={"interval_s": 3600})
    loop.publish(2, BOXES_V2)
    dev.wait("v2 committed", committed(2))
    dev.feed(2)
    dev.wait("stored", lambda st: st["writer"]["stored"] >= 2)
    dev.stop()
    assert not (dev.state / "control.sock").exists()
    cfg = ["--config", str(dev.config)]
    rows = json.loads(CliRunner().invoke(app, ["samples", "list", *cfg, "--json"]).stdout)
    r = CliRunner().invoke(app, ["feedback", "confirm", rows[0]["id"], "--who", "bo", *cfg])
    assert r.exit_code == 0, r.output  # on disk, with the service stopped
    rows = json.loads(CliRunner().invoke(app, ["samples", "list", *cfg, "--json"]).stdout)
    assert any((x["feedback"] or {}).get("who") == "bo" for x in rows)
    r = CliRunner().invoke(app, ["rollback", "--yes", "--config", str(dev.config)])
    assert r.exit_code == 0, r.output
    assert "rolled back to digits v1" in r.output
    slots = json.loads((dev.state / "slots.json").read_text())
    assert slots["slots"][slots["active"]]["version"] == 1
    assert slots["install"]["state"] == "rolled_back"
    assert 2 in slots["held"]["digits"]  # the hub's v2 is not re-installed by itself
    assert "digits" not in slots["bad_versions"]


def test_rollback_ends_the_trial_and_swaps_back_when_asked_during_trial(loop: Loop) -> None:
    dev = loop.serving_device()
    dev.reconfigure(update={"trial_frames": 100_000, "trial_s": 600})  # v2's trial won't end
    loop.publish(2, BOXES_V2)
    dev.wait("v2 on trial", lambda st: st["update_state"] == "trial")
    names = dev.feed(2)
    dev.wait("v2 serving", lambda st: all(n in dev.results() for n in names))
    assert {dev.results()[n]["bundle_version"] for n in names} == {2}
    r = CliRunner().invoke(app, ["rollback", "--yes", "--config", str(dev.config)])
    assert r.exit_code == 0, r.output
    assert "rolled back to digits v1" in r.output
    names = dev.feed(2)
    dev.wait("v1 serving", lambda st: all(n in dev.results() for n in names))
    assert {dev.results()[n]["bundle_version"] for n in names} == {1}
    st = dev.wait("status shows it", lambda st: st["update_state"] == "rolled_back")
    assert st["active"]["version"] == 1 and st["active"]["status"] == "committed"
    assert "trial failed: operator rollback" in (st["install"]["reason"] or "")
    assert dev.proc.poll() is None
