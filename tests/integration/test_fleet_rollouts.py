"""Staged rollouts with real device processes on a real hub (ticking every 0.3 s).

1. A canary device that fails its trial (killed in it, then rolled back on restart) halts the
   rollout; no device outside the canary is ordered or installs.
2. A good rollout, paused after its canary, resumes and walks every wave; then an ordered
   rollback (``leanloop rollout rollback``) brings every device back to v1's content as a new
   release v3, which the devices install as an order: no failure reported.

The hub runs on SQLite, or on PostgreSQL + S3 with ``LEANLOOP_TEST_HUB=postgres``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopkit import BOXES, BOXES_NEW, BundleMaker, Device, committed, wait_until
from typer.testing import CliRunner

from hub.config import HubConfig
from hub.fleet_client import FleetClient
from hub.rollouts import order_devices
from hub.testing import LiveHub
from leanloop.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture
def live_hub(tmp_path: Path, keys: Path, hub_storage: dict[str, Any]) -> Iterator[LiveHub]:
    cfg = HubConfig(
        data_dir=tmp_path / "hub",
        port=0,
        keys_dir=keys,
        timestamp_check_interval_s=3600,
        rollout_tick_s=0.3,
        **hub_storage,
    )
    with LiveHub(cfg) as hub:
        yield hub


@pytest.fixture
def fleet(live_hub: LiveHub) -> FleetClient:
    return FleetClient(live_hub.url, live_hub.admin_token)


def _start_on_v1(
    live_hub: LiveHub,
    fleet: FleetClient,
    keys: Path,
    make_bundle: BundleMaker,
    start_device: Callable[..., Device],
    ids: list[str],
) -> dict[str, Device]:
    fleet.publish_bundle(make_bundle(1, BOXES), keys)
    fleet.rollout("digits", 1)  # the old "set desired" route
    devices = {}
    for i, d in enumerate(ids):
        devices[d] = start_device(d, cohort=f"c{i % 2}")
    for dev in devices.values():
        dev.wait("v1 committed", committed(1))
    return devices


def _desired(fleet: FleetClient) -> dict[str, int | None]:
    """Each device's own desired version (None: it follows its cohort's or the fleet's)."""
    return {d["device_id"]: (d.get("desired") or {}).get("version") for d in fleet.devices()}


def test_canary_when_a_device_fails_its_trial_halts_and_no_one_else_installs(
    live_hub: LiveHub,
    fleet: FleetClient,
    keys: Path,
    make_bundle: BundleMaker,
    start_device: Callable[..., Device],
) -> None:
    ids = [f"cam-{i}" for i in range(5)]
    # The canary of rollout 1 (the first in a fresh hub): its first device is made to fail.
    canary = order_devices("1", [(d, f"c{i % 2}") for i, d in enumerate(ids)])[:2]
    kill = {"LEANLOOP_TEST_KILL_AT": "state:trial"}
    devices = _start_on_v1(live_hub, fleet, keys, make_bundle, start_device, ids)
    bad = devices[canary[0]]
    bad.stop(close_log=False)
    bad.restart(env=kill)  # killed in its next trial (v1 is committed already)
    bad.wait("v1 serving again", committed(1))
    fleet.publish_bundle(make_bundle(2, BOXES_NEW), keys)
    r = fleet.create_rollout(
        {"bundle": "digits", "version": 2, "waves": [{"count": 2}, {"percent": 100}],
         "soak_s": 0, "error_threshold": 0.05, "min_executed": 1}
    )  # fmt: skip
    assert r["id"] == 1 and r["waves"][0]["ordered"] == 2
    assert bad.wait_exit() == -9  # killed in its trial by the test hook
    bad.restart()  # comes back on v1 and reports the rolled-back trial
    wait_until("the halt", lambda: fleet.rollout_status(1)["status"] == "halted")
    st = fleet.rollout_status(1)
    assert "in wave 0" in st["reason"] and st["waves"][0]["failed"] == 1
    assert st["waves"][1]["ordered"] == 0
    devices[canary[1]].wait("the good canary device commits v2", committed(2))
    time.sleep(2)  # several device polls and hub ticks later, still nobody else
    assert [d for d, v in _desired(fleet).items() if v == 2] == sorted(canary)
    for d in set(ids) - set(canary):
        assert devices[d].status()["active"]["version"] == 1
        assert (devices[d].status().get("install") or {}).get("version") in (None, 1)
    assert bad.status()["active"]["version"] == 1


def test_rollout_when_paused_resumes_walks_all_waves_then_rollback_converges(
    live_hub: LiveHub,
    fleet: FleetClient,
    keys: Path,
    make_bundle: BundleMaker,
    start_device: Callable[..., Device],
) -> None:
    ids = [f"cam-{i}" for i in range(4)]
    devices = _start_on_v1(live_hub, fleet, keys, make_bundle, start_device, ids)
    fleet.publish_bundle(make_bundle(2, BOXES_NEW), keys)
    cli = CliRunner()
    auth = ["--hub", live_hub.url, "--token", live_hub.admin_token]
    res = cli.invoke(
        app, ["rollout", "create", "digits", "2", "--canary", "1", "--waves", "50,100",
              "--soak", "0", *auth, "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rid = json.loads(res.stdout)["id"]
    assert cli.invoke(app, ["rollout", "pause", str(rid), *auth]).exit_code == 0
    (first,) = [d for d, v in _desired(fleet).items() if v == 2]
    devices[first].wait("the canary commits v2", committed(2))
    time.sleep(1.5)  # ticks go by: a paused rollout orders no one
    assert [d for d, v in _desired(fleet).items() if v == 2] == [first]
    res = cli.invoke(app, ["rollout", "resume", str(rid), *auth])
    assert res.exit_code == 0, res.output
    for dev in devices.values():
        dev.wait("v2 committed", committed(2))
    wait_until("done", lambda: fleet.rollout_status(rid)["status"] == "done")
    st = fleet.rollout_status(rid)
    assert [w["ordered"] for w in st["waves"]] == [1, 1, 2]
    assert all(w["failed"] == 0 for w in st["waves"])
    res = cli.invoke(app, ["rollout", "status", str(rid), *auth])
    assert res.exit_code == 0 and "done" in res.stdout

    # Ordered rollback: v3 carries v1's files; devices install it like any release.
    res = cli.invoke(
        app, ["rollout", "rollback", "digits", "--to", "1", "--keys", str(keys), *auth, "--json"]
    )
    assert res.exit_code == 0, res.output
    rb = json.loads(res.stdout)
    assert (rb["kind"], rb["version"], rb["rollback_of"]) == ("rollback", 3, 1)
    for dev in devices.values():
        dev.wait("v3 committed", committed(3))
    assert fleet.manifest("digits", 3)["files"] == fleet.manifest("digits", 1)["files"]
    wait_until("rollback done", lambda: fleet.rollout_status(rb["id"])["status"] == "done")
    for d in fleet.devices():
        assert not [e for e in d.get("events") or [] if e.get("version") == 3], d["events"]
    res = cli.invoke(app, ["fleet", "list", *auth, "--json"])
    assert res.exit_code == 0
    listed = json.loads(res.stdout)
    assert {d["status"]["active"]["version"] for d in listed} == {3}
    res = cli.invoke(app, ["rollout", "pause", "999", *auth])
    assert res.exit_code == 2 and res.output.startswith("error: ")
