"""Device identity on real processes (issue 12): a real hub, real device services.

- Another device holding the fleet secret starts under the victim's id: it gets no token, the
  victim keeps heartbeating in its cohort, and its identity is untouched.
- The hub stops accepting the victim's token (an admin re-approves its key, which revokes the
  token): the device answers a challenge with its own key, gets a new token, keeps reporting,
  and still fetches and installs a bundle with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loopkit import BundleMaker, Device, committed, publish, wait_until

from hub.client import HubAdminClient
from hub.testing import LiveHub
from runtime.identity import DeviceKey

BOXES = [(25.0, 25.0, 30.0, 30.0)]


def _seen(admin: HubAdminClient, device_id: str) -> dict[str, Any]:
    return next(d for d in admin.devices() if d["device_id"] == device_id)


def test_identity_holds_when_another_device_starts_under_its_id_and_its_token_is_revoked(
    live_hub: LiveHub,
    admin: HubAdminClient,
    keys: Path,
    make_bundle: BundleMaker,
    start_device: Callable[..., Device],
) -> None:
    victim = start_device("cam-1")
    wait_until("the victim's first heartbeat", lambda: _seen_ok(admin, "cam-1"))
    key = DeviceKey.load_or_create(victim.state)
    token_before = json.loads((victim.state / "device.json").read_text())["device_token"]

    # Another enrolled device of the fleet restarts under the victim's id, with its own key
    # and the fleet secret (and asks for another cohort).
    thief = start_device("thief")
    wait_until("the thief's own enrolment", lambda: _seen_ok(admin, "thief"))
    thief.reconfigure(device_id="cam-1", hub={**_hub(live_hub), "cohort": "evil"})
    wait_until("the thief's refused enrolment", lambda: "is enrolled" in thief.tail())
    stolen = json.loads((thief.state / "device.json").read_text())
    assert stolen["device_id"] == "thief"  # it got no token for cam-1
    seen = _seen(admin, "cam-1")
    assert seen["cohort"] is None
    last = seen["last_seen"]
    wait_until("the victim still heartbeating", lambda: _seen(admin, "cam-1")["last_seen"] > last)
    thief.stop()

    # The hub revokes the victim's token (an admin approves its own key again): the device
    # recovers by signing a challenge, never by enrolling again.
    assert admin.approve_device("cam-1", key.public_b64) == key.public_b64
    wait_until(
        "the refreshed token",
        lambda: (
            json.loads((victim.state / "device.json").read_text())["device_token"] != token_before
        ),
    )
    approved = time.time()
    wait_until(
        "heartbeats again", lambda: (_seen(admin, "cam-1")["last_seen"] or 0) > approved + 0.5
    )
    publish(admin, keys, make_bundle(1, BOXES), 1)  # fetched with the new token
    victim.wait("bundle 1 committed", committed(1), timeout=90)


def _hub(live_hub: LiveHub) -> dict[str, Any]:
    return {"url": live_hub.url, "enroll_token": live_hub.enroll_token, "poll_interval_s": 0.3}


def _seen_ok(admin: HubAdminClient, device_id: str) -> bool:
    try:
        return _seen(admin, device_id)["status"] is not None
    except StopIteration:
        return False
