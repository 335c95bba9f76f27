"""Automatic rollback, reported to the hub: a bundle whose model does not load, one whose golden
check fails, and one that crashes the device during its trial. A real device process serves v1
throughout, and each outcome lands in the device's record on the real hub."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loopkit import BOXES_NEW, Loop, committed

from hub.client import HubAdminClient
from runtime.bundle.loader import file_sha256


def _tamper(bundle: Path, rel: str, change: Callable[[bytes], bytes]) -> None:
    """Change a file of a built bundle and re-list it in the manifest (the bundle stays
    consistent and gets signed: only what it *does* on the device is wrong)."""
    path = bundle / rel
    path.write_bytes(change(path.read_bytes()))
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"][rel] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(m, indent=2))


def _bad_golden(data: bytes) -> bytes:
    exp = json.loads(data)
    for stages in exp.values():
        for item in stages["classifier"]["items"]:
            item["score"] = 1.0 - item["score"]  # the device computes the real score
    return json.dumps(exp).encode()


def _events(admin: HubAdminClient) -> list[dict[str, Any]]:
    dev = next(d for d in admin.devices() if d["device_id"] == "cam-1")
    return list(dev.get("events") or [])


# (cause reported, event kind, how v<n> is made bad)
CASES: list[tuple[str, str, Callable[[Path], None] | None]] = [
    (
        "load_failed",
        "update_failed",
        lambda b: _tamper(b, "models/detector.onnx", lambda d: b"not an onnx model" + d[:64]),
    ),
    (
        "health_check_failed",
        "update_failed",
        lambda b: _tamper(b, "golden/expected.json", _bad_golden),
    ),
    ("crash_in_trial", "rolled_back", None),  # a sound bundle; the device dies in its trial
]


def test_device_rolls_back_and_reports_when_new_bundle_fails_to_load_check_or_trial(
    loop: Loop,
) -> None:
    dev = loop.serving_device()
    for version, (cause, kind, spoil) in enumerate(CASES, start=2):
        bundle = loop.make_bundle(version, BOXES_NEW)
        if spoil is not None:
            spoil(bundle)
        else:  # restart the device with a hook that SIGKILLs it once the trial is stored
            dev.stop(close_log=False)
            dev.restart(env={"LEANLOOP_TEST_KILL_AT": "state:trial"})
            dev.wait("v1 serving", committed(1))
        loop.publish(version, bundle=bundle)
        if spoil is None:
            assert dev.wait_exit() == -9
            dev.restart()
        st = dev.wait(
            f"v{version} {cause}",
            lambda st, v=version: (
                (st.get("install") or {}).get("version") == v
                and st["update_state"] in ("failed", "rolled_back")
            ),
        )
        assert st["active"]["version"] == 1 and st["active"]["status"] == "committed", cause
        assert "\n" not in (st["last_update_error"] or ""), st["last_update_error"]
        names = dev.feed(2)
        dev.wait("served", lambda st, n=names: all(x in dev.results() for x in n))
        assert {dev.results()[n]["bundle_version"] for n in names} == {1}, cause
        slots = json.loads((dev.state / "slots.json").read_text())
        assert version in slots["bad_versions"]["digits"], cause  # not retried by itself
        assert all(s["status"] not in ("staging", "staged") for s in slots["slots"].values())
        got = dev.wait(
            f"{cause} reported to the hub",
            lambda st, v=version: any(e["version"] == v for e in _events(loop.admin)),
        )
        del got
        (event,) = [e for e in _events(loop.admin) if e["version"] == version]
        assert (event["kind"], event["cause"]) == (kind, cause), event
        assert event["bundle"] == "digits" and f"v{version}" in event["reason"]
